"""Step 1 of the transfer recipe: frozen DenseNet121 features, computed once and cached.

On 2 shared CPU cores a DenseNet121 forward pass costs ~30 ms per tile (33 tiles/s measured), so training end to end is out
of reach; with the backbone frozen every tile (and every augmented copy) needs one pass only.
The features are the model's own ``features`` layer (the exported graph, preprocessing
included), so what the head and the OOD score see here is exactly what serving computes.

``cache_features`` writes ``<cache>/clean-<split>.npz`` for every split of the manifest, then augmented
copies of training tiles, ``<cache>/<policy>-s<seed>.npz``: for each seed, a seeded half of the training
tiles (rotated near-duplicates make the other half redundant) under each policy of
``training.data.lab_shift``. Each npz holds ``features`` (N, 1024) float32, ``labels``, ``paths``.
The stress sets and the colon tiles are cached the same way when the pipeline first needs them.

Example:
    >>> extractor = feature_extractor(".cache/backbones/densenet121-imagenet.weights.h5")
    >>> extract(extractor, tiles).shape            # tiles: uint8 (N, 224, 224, 3)
    (N, 1024)
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from imageclf.core import stain as stain_module
from imageclf.core.imaging import IMAGE_SUFFIXES, load_model_input
from training.calibration.scale_reference import train_scale_reference
from training.data import image_sets, lab_shift
from training.data.catalog import LUNG
from training.data.samples import load_split, read_manifest
from training.models.architectures import build_model

# The recipe's classes, as training orders them (sorted folder names): the catalog's one list.
CLASS_IDS = sorted(LUNG.class_names)
BENIGN = LUNG.benign_classes


def feature_extractor(weights: str | Path) -> keras.Model:
    """The densenet121 model of ``training.models.architectures`` cut at its pooled ``features`` layer.

    Example:
        >>> feature_extractor(".cache/backbones/densenet121-imagenet.weights.h5").output.shape
        (None, 1024)
    """
    model = build_model(num_classes=len(CLASS_IDS), work_size=None, backbone="densenet121",
                        backbone_weights=str(weights))
    return keras.Model(model.inputs[0], model.get_layer("features").output, name="features")


def extract(extractor: keras.Model, images: np.ndarray, *, batch_size: int = 32) -> np.ndarray:
    """Features of uint8 images (N, H, W, 3), in batches, as float32 (N, D)."""
    forward = tf.function(lambda x: extractor(x, training=False), reduce_retracing=True)
    out = [forward(np.asarray(images[i:i + batch_size])).numpy() for i in range(0, len(images), batch_size)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, extractor.output.shape[-1]), np.float32)


def save_npz(path: Path, features: np.ndarray, labels: np.ndarray, paths: list[str]) -> None:
    """Write a feature cache atomically (no half-written file is ever read as complete)."""
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, features=features.astype(np.float32), labels=np.asarray(labels, np.int32),
             paths=np.asarray(paths, dtype=str))
    tmp.replace(path)


def load_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, labels, paths) from a cache written by :func:`save_npz`."""
    with np.load(path, allow_pickle=False) as data:
        return data["features"], data["labels"], data["paths"]


def augmented_images(images: np.ndarray, labels: np.ndarray, *, policy: str, seed: int,
                     share: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(indices, augmented copies) of a seeded ``share`` of ``images`` under ``policy``.

    Mosaic tiles come from the same class of the same array (the training split), so no group
    of another split leaks in.
    """
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(images), int(round(share * len(images))), replace=False))
    by_class = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    out = np.empty((len(chosen), *images.shape[1:]), np.uint8)
    for j, i in enumerate(chosen):
        pool_index = by_class[labels[i]]
        pool = _LazyPool(images, pool_index)
        out[j] = lab_shift.augment(np.asarray(images[i]), policy=policy, rng=rng, pool=pool)
    return chosen, out


class _LazyPool:
    """Rows of a (memory-mapped) image array, read only when a mosaic draws them."""
    def __init__(self, images: np.ndarray, index: np.ndarray):
        self.images, self.index = images, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> np.ndarray:
        return np.asarray(self.images[self.index[i]])


def cache_features(*, data: Path, manifest: Path, out: Path, weights: Path, policies: list[str],
                   seeds: list[int], share: float, image_cache: Path,
                   stain: stain_module.StainSpec | None = None) -> None:
    """Step 1: clean features of every split, then augmented training copies (skips what exists).
    With ``stain`` every tile is normalised after augmentation, as serving normalises what it is sent."""
    extractor = feature_extractor(weights)
    samples = read_manifest(manifest)
    out.mkdir(parents=True, exist_ok=True)
    train = None
    for split in ("train", "val", "test"):
        rows = [s for s in samples if s.split == split]
        images, labels = load_split(data, rows, class_ids=CLASS_IDS, size=(224, 224), cache_dir=image_cache)
        if split == "train":
            train = (images, labels, [s.path for s in rows])
        target = out / f"clean-{split}.npz"
        if not target.is_file():
            start = time.time()
            save_npz(target, extract(extractor, stain_module.tiles_as_model_input(images, stain)), labels, [s.path for s in rows])
            print(f"{target}: {len(rows)} tiles in {time.time() - start:.0f} s", flush=True)
    images, labels, paths = train
    for seed in seeds:  # seed-major: a run cut short still has whole seeds for every policy
        for policy in policies:
            target = out / f"{policy}-s{seed}.npz"
            if target.is_file():
                continue
            start = time.time()
            chosen, augmented = augmented_images(images, labels, policy=policy, seed=1000 * seed + len(policy),
                                                 share=share)
            feats = extract(extractor, stain_module.tiles_as_model_input(augmented, stain))
            save_npz(target, feats, labels[chosen], [paths[i] for i in chosen])
            print(f"{target}: {len(chosen)} tiles in {time.time() - start:.0f} s", flush=True)


def shifted_features(extractor: Callable[[], keras.Model], *, data: Path, manifest: Path, external: Path, cache: Path,
                     per_class: int = 150, stain: stain_module.StainSpec | None = None) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray | None]]]:
    """Features of the stress sets (``training.data.image_sets``) built from val and test tiles, and of the
    external sets, cached in ``<cache>/shifted-<part>.npz``. Labels are class ids (-1: not lung).
    ``extractor`` gives the feature model; it is called only when a cache file is missing."""
    parts: dict[str, list] = {}
    if not all((cache / f"shifted-{part}.npz").is_file() for part in ("val", "test", "external")):
        reference = train_scale_reference(data, manifest)
        ext, palettes = image_sets.external_sets(external, scale_reference=reference)
        photo = image_sets.photo_set(data, manifest, n=60)
        parts = {split: image_sets.lc25000_sets(data, manifest, per_class=per_class, palettes=palettes, split=split)
                 for split in ("val", "test")}
        parts["external"] = ext + ([photo] if photo is not None else [])
    out = {}
    for part in ("val", "test", "external"):
        target = cache / f"shifted-{part}.npz"
        if not target.is_file():
            arrays = {}
            for image_set in parts[part]:
                labels = [CLASS_IDS.index(x) if x in CLASS_IDS else -1 for x in (image_set.labels or [])]
                arrays[f"x:{image_set.name}"] = extract(extractor(), stain_module.tiles_as_model_input(image_set.images, stain))
                arrays[f"y:{image_set.name}"] = np.array(labels or [-1] * len(image_set.images), np.int32)
            np.savez(target, **arrays)
        with np.load(target, allow_pickle=False) as loaded:
            out[part] = {k[2:]: (loaded[k], loaded["y:" + k[2:]]) for k in loaded.files if k.startswith("x:")}
    return out


def colon_features(extractor: Callable[[], keras.Model], root: Path, cache: Path,
                   stain: stain_module.StainSpec | None = None) -> np.ndarray:
    """Features of LC25000's colon tiles (same lab as the lung tiles): the one organ used to choose the
    OOD settings, so the non-lung figures are reported on the OTHER organs (leave-organ-out)."""
    target = cache / "colon.npz"
    if not target.is_file():
        paths = sorted(p for p in root.glob("*/*") if p.suffix.lower() in IMAGE_SUFFIXES)
        images = np.stack([load_model_input(p, size=(224, 224)) for p in paths])
        save_npz(target, extract(extractor(), stain_module.tiles_as_model_input(images, stain)), np.full(len(paths), -1), [p.name for p in paths])
    return load_npz(target)[0]
