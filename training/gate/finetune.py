"""Arm 5 of issue 20: partial fine-tuning (DenseNet121's last dense block and the head) under heavy
stain augmentation, three seeds, written as caches ``training.gate.evaluate`` reads.

Fine-tuning only ``conv5`` means the network up to ``pool4_pool`` (7 x 7 x 512) never changes, so it
runs once per field and is cached (``fronts/``); each seed then trains on the cached activations, at a
fraction of a full forward pass. Batch normalisation stays in inference mode (its ImageNet statistics
are kept; only convolutions and the head learn), as in keras-io's fine-tuning guide.

Stages (each skips what is already on disk, so a cut-short run resumes):
1. ``fronts``: the evaluated sets of ``training.gate.features`` (same cuts, same seeds), the whole
   grouped TRAIN split, and per seed one ``heavy``-policy copy (``training.data.lab_shift``: random
   LAB transfer + strong HED + scale + blur/JPEG/noise) of every TRAIN tile and of the 900 VAL tiles.
2. ``baseline``: the served model on those fronts (``<set>.npz``: the "current" row, reproduced).
3. per seed: train on clean + that seed's heavy TRAIN copy (AdamW, early stopping on clean + heavy
   VAL loss), fit the temperature on clean + heavy VAL, save ``ft<seed>.keras`` and write
   ``<set>@ft<seed>.npz`` (pooled features, calibrated probabilities, the served colour verdict).

Example:
    nice -n 19 python -m training.gate.finetune --cache .cache/tissue_gate
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import keras
import numpy as np

from training.calibration.scale_reference import train_scale_reference
from training.calibration.temperature import fit_temperature, with_temperature
from training.data import image_sets, lab_shift
from training.data.far_ood import make_far_ood_set
from training.gate.features import SEEDS, SIZE, TRAIN_PER_CLASS, VAL_PER_CLASS, Cache, _meta, colon_fold, colon_tiles, \
    external_fields, per_class_rows, run_batches, shifted, source_arguments, split_tiles, stress_fields, \
    whole_image_fields

FRONT_LAYER = "pool4_pool"          # the last layer that stays frozen: conv5 and after are trained
EVAL_SETS = ("val", "test", "stress", "external", "photos", "whole", "colon", "farood")


def conv5_of(model: keras.Model) -> keras.Model:
    """The backbone after ``FRONT_LAYER`` (pool4 activations -> last feature map), sharing ``model``'s layers."""
    base = model.get_layer("densenet121")
    return keras.Model(base.get_layer(FRONT_LAYER).output, base.output)


def split_model(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """(front: uint8 fields -> pool4 activations, tail: pool4 activations -> [probabilities, features]),
    sharing ``model``'s layers and weights (training the tail trains ``model``)."""
    base = model.get_layer("densenet121")
    pixels = keras.Input(model.inputs[0].shape[1:], dtype=model.inputs[0].dtype)
    x = pixels
    for name in ("to_float", "scale", "imagenet_norm"):
        x = model.get_layer(name)(x)
    front = keras.Model(pixels, keras.Model(base.inputs, base.get_layer(FRONT_LAYER).output)(x))
    conv5 = conv5_of(model)
    activations = keras.Input(conv5.inputs[0].shape[1:])
    features = model.get_layer("features")(conv5(activations))
    y = features
    for name in ("dropout", "logits", "temperature", "probabilities"):
        y = model.get_layer(name)(y)
    return front, keras.Model(activations, [y, features])


class Fronts:
    """The frozen front's activations per set, on disk under ``<cache>/fronts``."""

    def __init__(self, cache: Cache, folder: Path):
        self.cache, self.folder = cache, folder
        folder.mkdir(parents=True, exist_ok=True)
        self.front, self.served_tail = split_model(cache.predictor.model)

    def save(self, name: str, images: np.ndarray, meta: dict, *, dtype=np.float32) -> None:
        target = self.folder / f"{name}.npz"
        if target.is_file():
            return
        start = time.time()
        (fronts,) = run_batches(self.front, images)
        tmp = target.with_suffix(".tmp.npz")
        np.savez(tmp, fronts=fronts.astype(dtype), colour_ok=self.cache.colour_ok(images),
                 **{k: np.asarray(v) for k, v in meta.items()})
        tmp.replace(target)
        print(f"fronts/{name}: {len(images)} fields in {time.time() - start:.0f} s", flush=True)

    def load(self, name: str) -> dict[str, np.ndarray]:
        return dict(np.load(self.folder / f"{name}.npz", allow_pickle=False))


def heavy_copy(images: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """One ``heavy``-policy copy of each tile; zoom-out mosaics drawn from tiles of its class."""
    rng = np.random.default_rng(20_000 + seed)
    out = np.empty_like(images)
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        pool = images[rows]          # one copy per class, not per tile
        for i in rows:
            out[i] = lab_shift.augment(images[i], policy="heavy", rng=rng, pool=pool)
    return out


def cache_fronts(fronts: Fronts, *, data: Path, manifest: Path, external: Path, colon: Path) -> None:
    """Stage 1: the evaluated sets first, then TRAIN and the heavy copies, seed by seed."""
    val, val_meta = split_tiles(data, manifest, "val", VAL_PER_CLASS, seed=0)
    fronts.save("val", val, val_meta)
    ext, ext_meta, palettes = external_fields(external, train_scale_reference(data, manifest))
    fronts.save("external", ext, ext_meta)
    photos = image_sets.photo_set(data, manifest, n=60)
    fronts.save("photos", photos.images, _meta(len(photos.images), image=[f"photo{i}" for i in range(len(photos.images))],
                                               label=[""] * len(photos.images), set_name=photos.name))
    fronts.save("whole", *whole_image_fields(external, fronts.cache.predictor))
    fronts.save("test", *split_tiles(data, manifest, "test", None, seed=0))
    fronts.save("stress", *stress_fields(data, manifest, palettes))
    colon_images, colon_meta = colon_tiles(colon)
    fronts.save("colon", colon_images, colon_meta)
    far = make_far_ood_set(8, size=SIZE, seed=0)
    far_images = np.concatenate(list(far.values()))
    fronts.save("farood", far_images, _meta(len(far_images), image=[f"{k}:{i}" for k, v in far.items() for i in range(len(v))],
                                            label=[""] * len(far_images), set_name="far-ood"))
    train, train_meta = split_tiles(data, manifest, "train", None, seed=0)
    fronts.save("train", train, train_meta, dtype=np.float16)
    for seed in SEEDS:
        fronts.save(f"train-heavy-s{seed}", heavy_copy(train, train_meta["label"], seed),
                    {**train_meta, "set": np.full(len(train), f"lc25000-train-heavy-s{seed}")}, dtype=np.float16)
        fronts.save(f"val-heavy-s{seed}", heavy_copy(val, val_meta["label"], seed),
                    {**val_meta, "set": np.full(len(val), f"lc25000-val-heavy-s{seed}")})
    # the colon gate's negatives: the same ``all``-policy copies as ``training.gate.features`` makes
    colon_pools = np.array([f"{g.split(':')[0]}:{f}" for g, f in zip(colon_meta["group"], colon_fold(colon_meta["group"]))])
    for seed in SEEDS:
        fronts.save(f"colon-shifted-s{seed}", *shifted(colon_images, colon_meta, colon_pools, seed))


def write_sets(fronts: Fronts, tail: keras.Model, out: Path, variant: str, seed: int | None = None) -> None:
    """``<set>[@variant].npz`` in ``training.gate.features``' format, from the cached fronts. A seed's
    fine-tuned model also gets its colon gate's inputs: ``colon-shifted-s<seed>`` and, as
    ``train-shifted-s<seed>``, the heavy TRAIN copy it was trained on."""
    names = {n: n for n in EVAL_SETS + ("train",)}
    if seed is not None:
        names |= {f"colon-shifted-s{seed}": f"colon-shifted-s{seed}", f"train-shifted-s{seed}": f"train-heavy-s{seed}"}
    elif not variant:   # the served model's colon copies (arm 3's negatives in ``training.gate.evaluate``)
        names |= {f"colon-shifted-s{s}": f"colon-shifted-s{s}" for s in SEEDS}
    for name, source in names.items():
        target = out / (f"{name}@{variant}.npz" if variant else f"{name}.npz")
        if target.is_file():
            continue
        d = fronts.load(source)
        if name == "train" and not variant:
            # the arms' baseline "train" is the 1,200-tile subsample of ``training.gate.features``
            keep = per_class_rows(d["label"], TRAIN_PER_CLASS, seed=0)
            d = {k: v[keep] for k, v in d.items()}
        probabilities, features = run_batches(tail, d.pop("fronts"))
        np.savez(target, features=features, probabilities=probabilities, **d)
        print(f"{target.name}: {len(features)} fields", flush=True)


def labels_of(d: dict, classes: list[str]) -> np.ndarray:
    return np.array([classes.index(c) for c in d["label"]])


def fine_tune(model_path: Path, fronts: Fronts, seed: int, *, epochs: int, learning_rate: float,
              batch: int = 64) -> tuple[keras.Model, dict]:
    """One seed: conv5 (batch norm frozen) and the head trained on clean + heavy TRAIN activations."""
    keras.utils.set_random_seed(seed)
    model = keras.saving.load_model(model_path, compile=False)
    classes = list(fronts.cache.predictor.spec.class_ids)
    conv5 = conv5_of(model)
    for layer in conv5.layers:
        layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)
    activations = keras.Input(conv5.inputs[0].shape[1:])
    x = model.get_layer("features")(conv5(activations))
    logits = model.get_layer("logits")(model.get_layer("dropout")(x))
    net = keras.Model(activations, logits)
    net.compile(optimizer=keras.optimizers.AdamW(learning_rate, weight_decay=1e-4),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    train = [fronts.load("train"), fronts.load(f"train-heavy-s{seed}")]
    val = [fronts.load("val"), fronts.load(f"val-heavy-s{seed}")]
    x_train = np.concatenate([d["fronts"] for d in train]).astype(np.float32)
    y_train = np.concatenate([labels_of(d, classes) for d in train])
    x_val = np.concatenate([d["fronts"] for d in val]).astype(np.float32)
    y_val = np.concatenate([labels_of(d, classes) for d in val])
    start = time.time()
    history = net.fit(x_train, y_train, batch_size=batch, epochs=epochs, shuffle=True, verbose=2,
                      validation_data=(x_val, y_val),
                      callbacks=[keras.callbacks.EarlyStopping(patience=1, restore_best_weights=True)])
    del x_train
    temperature = fit_temperature(np.asarray(net.predict(x_val, batch_size=batch, verbose=0), np.float64), y_val)
    tuned = with_temperature(model, temperature)
    info = {"seed": seed, "epochs_run": len(history.history["loss"]), "temperature": temperature,
            "train_seconds": round(time.time() - start), "history": history.history}
    return tuned, info


def main(argv: list[str] | None = None) -> None:
    parser = source_arguments(argparse.ArgumentParser(
        description="Arm 5 of the tissue gate: partial fine-tuning, three seeds."))
    parser.add_argument("--cache", type=Path, default=Path(".cache/tissue_gate"))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--seeds", type=int, nargs="*", default=list(SEEDS))
    args = parser.parse_args(argv)
    cache = Cache(args.model, args.cache)
    fronts = Fronts(cache, args.cache / "fronts")
    cache_fronts(fronts, data=args.data, manifest=args.manifest, external=args.external, colon=args.colon)
    write_sets(fronts, fronts.served_tail, args.cache, "")
    for seed in args.seeds:
        saved = args.cache / f"ft{seed}.keras"
        if saved.is_file():
            tuned = keras.saving.load_model(saved, compile=False)
        else:
            tuned, info = fine_tune(args.model / "model.keras", fronts, seed, epochs=args.epochs,
                                    learning_rate=args.learning_rate)
            print(f"seed {seed}: {info}", flush=True)
            (args.cache / f"ft{seed}.json").write_text(repr(info) + "\n")
            tuned.save(saved)
        write_sets(fronts, split_model(tuned)[1], args.cache, f"ft{seed}", seed)


if __name__ == "__main__":
    main()
