"""Every field the tissue-gate arms are judged on, passed once through the served model and cached.

One npz per set under ``.cache/tissue_gate/`` (git-ignored): ``features`` (N, 1024, the model's pooled
``features`` layer), ``probabilities`` (N, 3, the served softmax, temperature included), ``colour_ok``
(the served colour check on the pixels as cut), and per field ``image`` (the source image or
near-duplicate group: the bootstrap unit), ``label`` (class name, '' when not lung), ``set`` and
``group``. A ``@macenko`` twin holds the same fields after per-image Macenko normalisation by the
served code (``imageclf.core.stain``, one estimate per image, the reference of
``training.calibration.stain_reference``), with ``colour_ok`` still on the raw pixels (the
normalisation is part of the model, the colour check judges what the user sent),
``colour_ok_normalised`` beside it and ``stain_status`` (whether each field's image was normalised).

The sets are the stress suite's own (``training.data.image_sets``: the same scale estimate, the same
cuts, the same seeds), plus a subsample of train tiles, their lab-shifted copies (policy ``all`` of
``training.data.lab_shift``, one copy per seed), validation tiles for thresholds, LC25000's colon
tiles and their shifted copies, generated far-OOD images, and the fields the served whole-image rule
cuts from each external image (``imageclf.core.rule.plan``).

Example:
    nice -n 19 python -m training.gate.features --out .cache/tissue_gate
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import keras
import numpy as np

from imageclf.core import refusal, rule
from imageclf.core.imaging import decode_image, load_model_input
from imageclf.core.scale import estimate_relative_size
from imageclf.model.predictor import Predictor
from training.calibration.scale_reference import train_scale_reference
from training.data import image_sets, lab_shift
from training.data.far_ood import make_far_ood_set
from training.data.samples import read_manifest
from imageclf.core import stain
from training.calibration.stain_reference import fit_stain_spec

SEEDS = (0, 1, 2)
SIZE = (224, 224)
TRAIN_PER_CLASS, VAL_PER_CLASS = 400, 300


def run_batches(net: keras.Model, x: np.ndarray, batch: int = 32) -> list[np.ndarray]:
    """``net`` over ``x`` in batches of ``batch``, each output concatenated as float32."""
    parts = [net.predict_on_batch(np.asarray(x[i:i + batch])) for i in range(0, len(x), batch)]
    parts = [p if isinstance(p, (list, tuple)) else [p] for p in parts]
    return [np.concatenate([np.asarray(p[k], np.float32) for p in parts]) for k in range(len(parts[0]))]


class Cache:
    """The model (two outputs from one pass), the colour check and the cache folder."""

    def __init__(self, model: Path, out: Path):
        self.predictor = Predictor(model, runtime="keras")
        keras_model = self.predictor.model
        self.forward = keras.Model(keras_model.inputs,
                                  [keras_model.outputs[0], keras_model.get_layer("features").output])
        self.out = out
        out.mkdir(parents=True, exist_ok=True)

    def run(self, images: np.ndarray, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, features) of uint8 fields, in batches."""
        probs, feats = run_batches(self.forward, images, batch)
        return probs, feats

    def colour_ok(self, images: np.ndarray) -> np.ndarray:
        abstain = self.predictor.spec.refusal.abstain
        return np.array([refusal.colour_ok(im, abstain) for im in images], bool)

    def save(self, name: str, images: np.ndarray, meta: dict[str, np.ndarray], *, macenko: stain.StainSpec | None = None):
        """Write ``<name>.npz`` (or ``<name>@macenko.npz``), skipping one that exists."""
        target = self.out / (f"{name}@macenko.npz" if macenko is not None else f"{name}.npz")
        if target.is_file():
            return
        start = time.time()
        colour = self.colour_ok(images)
        extra = {}
        if macenko is not None:
            ids = np.asarray(meta["image"])
            normalised, status = np.empty_like(images), np.empty(len(images), object)
            for image_id in dict.fromkeys(ids.tolist()):
                rows = np.flatnonzero(ids == image_id)
                estimate = stain.estimate_stains(images[rows], macenko)
                normalised[rows] = stain.normalise(images[rows], estimate, macenko)
                status[rows] = estimate.status
            extra["colour_ok_normalised"] = self.colour_ok(normalised)
            extra["stain_status"] = status.astype(str)
            images = normalised
        probs, feats = self.run(images)
        tmp = target.with_suffix(".tmp.npz")
        np.savez(tmp, features=feats, probabilities=probs, colour_ok=colour, **extra,
                 **{k: np.asarray(v) for k, v in meta.items()})
        tmp.replace(target)
        print(f"{target.name}: {len(images)} fields in {time.time() - start:.0f} s", flush=True)


def _meta(n: int, *, image, label, set_name, group=None) -> dict[str, np.ndarray]:
    return {"image": np.asarray(image, str), "label": np.asarray(label, str), "set": np.full(n, set_name),
            "group": np.asarray(group if group is not None else image, str)}


def per_class_rows(labels: np.ndarray, per_class: int | None, seed: int) -> np.ndarray:
    """Row numbers of ``per_class`` seeded rows per label (sorted labels, rows in order; all when None)."""
    labels, rng = np.asarray(labels), np.random.default_rng(seed)
    chosen = []
    for label in sorted(set(labels.tolist())):
        of_class = np.flatnonzero(labels == label)
        chosen += list(of_class if per_class is None else of_class[sorted(rng.choice(len(of_class), per_class, replace=False))])
    return np.asarray(chosen, int)


def split_tiles(data: Path, manifest: Path, split: str, per_class: int | None, seed: int):
    """(images, meta) of ``per_class`` seeded tiles per class of one split (all when None)."""
    rows = [s for s in read_manifest(manifest) if s.split == split]
    chosen = [rows[i] for i in per_class_rows(np.array([s.label for s in rows]), per_class, seed)]
    images = np.stack([load_model_input(data / s.path, size=SIZE) for s in chosen])
    return images, _meta(len(chosen), image=[s.path for s in chosen], label=[s.label for s in chosen],
                         set_name=f"lc25000-{split}", group=[f"{s.label}:{s.group}" for s in chosen])


def colon_tiles(root: Path):
    """LC25000 colon tiles (same lab as the lung tiles), with their near-duplicate groups."""
    with (root / "groups.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    images = np.stack([load_model_input(root / r["path"], size=SIZE) for r in rows])
    return images, _meta(len(rows), image=[r["path"] for r in rows], label=[""] * len(rows), set_name="lc25000-colon",
                         group=[f"{r['label']}:{r['group']}" for r in rows])


def colon_fold(groups: np.ndarray) -> np.ndarray:
    """Two folds of the colon tiles by near-duplicate group (fit on one, report the other)."""
    return np.array([int(g.rsplit(":", 1)[1]) % 2 for g in groups])


def shifted(images: np.ndarray, meta: dict, pools: np.ndarray, seed: int):
    """One ``all``-policy copy of each tile (stain, scale, blur/JPEG/noise); mosaics drawn from the
    tiles sharing its ``pools`` key (same class, same fold), so no group crosses a fold."""
    rng = np.random.default_rng(10_000 + seed)
    out = np.empty_like(images)
    for key in np.unique(pools):
        rows = np.flatnonzero(pools == key)
        pool = images[rows]          # one copy per key, not per tile (it was most of the caching time)
        for i in rows:
            out[i] = lab_shift.augment(images[i], policy="all", rng=rng, pool=pool)
    return out, {**meta, "set": np.full(len(images), f"{meta['set'][0]}-shifted-s{seed}")}


def external_fields(root: Path, reference):
    """The stress suite's external fields (``image_sets.external_sets``, same cuts) with their image ids."""
    images, ids, labels, sets = [], [], [], []
    for name, path in image_sets.external_sources(root):
        rgb = decode_image(path)
        relative = estimate_relative_size(rgb, reference)[0]
        factor = float(np.clip(1.0 / relative, 0.25, 4.0)) if relative else 0.7
        cut = image_sets.fields(rgb, factor=factor)
        images.append(cut)
        ids += [str(path.relative_to(root))] * len(cut)
        labels += [path.parent.name if name == "lung-tcga" else ""] * len(cut)
        sets += [name] * len(cut)
    images = np.concatenate(images)
    meta = _meta(len(images), image=ids, label=labels, set_name="")
    meta["set"] = np.asarray(sets)
    palettes = {}
    for lab in sorted({image_sets.palette_name(s) for s in sets}):
        rows = [i for i, s in enumerate(sets) if image_sets.palette_name(s) == lab]
        palettes[lab] = lab_shift.lab_stats(images[rows])
    return images, meta, palettes


def whole_image_fields(root: Path, predictor: Predictor):
    """The fields the served rule cuts from each external image (scale ``auto``), in plan order."""
    images, ids, sets = [], [], []
    for name, path in image_sets.external_sources(root):
        fields = rule.plan(predictor.request(path, "auto"), predictor.spec).fields
        if fields is None or not len(fields):
            continue
        pixels = fields.source.read(0, len(fields))     # as cut, before the stain step
        images.append(pixels)
        ids += [str(path.relative_to(root))] * len(pixels)
        sets += [name] * len(pixels)
    images = np.concatenate(images)
    meta = _meta(len(images), image=ids, label=[""] * len(ids), set_name="")
    meta["set"] = np.asarray(sets)
    return images, meta


def stress_fields(data: Path, manifest: Path, palettes: dict):
    """The stress suite's LC25000 sets (100 test tiles per class, clean and under each shift)."""
    sets = image_sets.lc25000_sets(data, manifest, per_class=100, palettes=palettes, seed=0)
    images = np.concatenate([s.images for s in sets])
    n = len(sets[0].images)
    meta = _meta(len(images), image=[f"{s.name}:{i}" for s in sets for i in range(n)],
                 label=[x for s in sets for x in s.labels], set_name="")
    meta["set"] = np.asarray([s.name for s in sets for _ in range(n)])
    meta["group"] = np.asarray([f"tile{i}" for _ in sets for i in range(n)])   # the same test tile across shifts
    return images, meta


def build(*, model: Path, data: Path, manifest: Path, external: Path, colon: Path, out: Path) -> None:
    """Everything, most needed first; a set already cached is skipped, so a cut-short run resumes."""
    cache = Cache(model, out)
    reference = train_scale_reference(data, manifest)
    train, train_meta = split_tiles(data, manifest, "train", TRAIN_PER_CLASS, seed=0)
    macenko = fit_stain_spec(data, manifest)
    (out / "stain.json").write_text(json.dumps(macenko.to_dict(), indent=2) + "\n")
    ext, ext_meta, palettes = external_fields(external, reference)
    photos = image_sets.photo_set(data, manifest, n=60)
    photo_meta = _meta(len(photos.images), image=[f"photo{i}" for i in range(len(photos.images))],
                       label=[""] * len(photos.images), set_name=photos.name)
    whole, whole_meta = whole_image_fields(external, cache.predictor)
    val, val_meta = split_tiles(data, manifest, "val", VAL_PER_CLASS, seed=0)
    cache.save("val", val, val_meta)
    cache.save("external", ext, ext_meta)
    cache.save("photos", photos.images, photo_meta)
    cache.save("whole", whole, whole_meta)
    test, test_meta = split_tiles(data, manifest, "test", None, seed=0)
    cache.save("test", test, test_meta)
    del test
    stress, stress_meta = stress_fields(data, manifest, palettes)
    cache.save("stress", stress, stress_meta)
    del stress
    colon_images, colon_meta = colon_tiles(colon)
    cache.save("colon", colon_images, colon_meta)
    cache.save("train", train, train_meta)
    far = make_far_ood_set(8, size=SIZE, seed=0)
    far_images = np.concatenate(list(far.values()))
    far_meta = _meta(len(far_images), image=[f"{k}:{i}" for k, v in far.items() for i in range(len(v))],
                     label=[""] * len(far_images), set_name="far-ood")
    cache.save("farood", far_images, far_meta)
    # The normalised twins of the evaluated sets come before the extra shifted seeds: the stain arms
    # (docs/tissue-gate.md) need them, only the refit arms need more seeds.
    for name, images, meta in (("val", val, val_meta), ("external", ext, ext_meta), ("photos", photos.images, photo_meta),
                               ("whole", whole, whole_meta), ("colon", colon_images, colon_meta),
                               ("train", train, train_meta), ("farood", far_images, far_meta)):
        cache.save(name, images, meta, macenko=macenko)
    test, test_meta = split_tiles(data, manifest, "test", None, seed=0)
    cache.save("test", test, test_meta, macenko=macenko)
    del test
    stress, stress_meta = stress_fields(data, manifest, palettes)
    cache.save("stress", stress, stress_meta, macenko=macenko)
    del stress
    train_pools = train_meta["label"]
    colon_pools = np.array([f"{g.split(':')[0]}:{f}" for g, f in zip(colon_meta["group"], colon_fold(colon_meta["group"]))])
    for seed in SEEDS:
        cache.save(f"train-shifted-s{seed}", *shifted(train, train_meta, train_pools, seed))
        cache.save(f"colon-shifted-s{seed}", *shifted(colon_images, colon_meta, colon_pools, seed))


def source_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The model and data options every caching step of the gate takes (same defaults everywhere)."""
    parser.add_argument("--model", type=Path, default=Path("hub_model"))
    parser.add_argument("--data", type=Path, default=Path("../shared/data/lc25000-lung-224"))
    parser.add_argument("--manifest", type=Path, default=Path("training/splits/lc25000-lung-grouped.csv"))
    parser.add_argument("--external", type=Path, default=Path("../shared/data/external-he"))
    parser.add_argument("--colon", type=Path, default=Path("../shared/data/lc25000-colon-224"))
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = source_arguments(argparse.ArgumentParser(
        description="Cache the fields, features and probabilities the tissue-gate arms need."))
    parser.add_argument("--out", type=Path, default=Path(".cache/tissue_gate"))
    args = parser.parse_args(argv)
    build(model=args.model, data=args.data, manifest=args.manifest, external=args.external, colon=args.colon, out=args.out)


if __name__ == "__main__":
    main()
