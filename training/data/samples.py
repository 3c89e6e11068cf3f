"""Dataset indexing, grouped splitting, split manifests and image caching.

A dataset is a folder of class folders (``<root>/<class>/*.jpg``), optionally with a
groups CSV (``path,label,group``) naming tiles that are augmented copies of one original.
Splits are made by group, never by tile, so no copy of a test tile is ever trained on.

Example:
    >>> samples = index_dataset("../shared/data/lc25000-lung-224")
    >>> rows = grouped_split(samples, seed=0)
    >>> write_manifest(rows, "training/splits/lc25000-lung-grouped.csv")
"""
from __future__ import annotations

import csv
import hashlib
import random
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from imageclf.errors import ModelError
from imageclf.core.imaging import IMAGE_SUFFIXES, load_model_input

SPLITS = ("train", "val", "test")


class DatasetError(ModelError, ValueError):
    """The dataset folder or its manifest is not usable; the message says why."""

@dataclass(frozen=True)
class Sample:
    """One image: its path relative to the dataset root, class id, group and split."""

    path: str
    label: str
    group: str
    split: str = ""


def index_dataset(root: str | Path, *, groups_csv: str | Path | None = None, folder: str = "",
                  split: str = "") -> list[Sample]:
    """List every image under ``root/<folder>/<class>/``, with its group.

    Paths are relative to ``root`` (``folder`` names a subfolder such as ``train`` of a dataset
    that comes split; ``split`` is then written into each sample). ``groups_csv`` defaults to
    ``root/groups.csv`` when that file exists; without one, each image is its own group.

    Example:
        >>> index_dataset("../shared/data/chest-ct", folder="valid", split="val")[0].path
        'valid/adenocarcinoma/...'
    """
    root = Path(root)
    base = root / folder
    if not base.is_dir():
        raise DatasetError(f"Dataset folder not found: {base}")
    groups = read_groups(root, groups_csv)
    samples = []
    for class_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        for image in sorted(class_dir.iterdir()):
            if image.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            rel = image.relative_to(root).as_posix()
            samples.append(Sample(path=rel, label=class_dir.name, group=groups.get(rel, rel), split=split))
    if not samples:
        raise DatasetError(f"No images found in class folders under {base}")
    return samples


def read_groups(root: str | Path, groups_csv: str | Path | None = None) -> dict[str, str]:
    """``{path relative to root: group}`` from the groups CSV (``root/groups.csv`` by default), else ``{}``."""
    groups_path = Path(groups_csv) if groups_csv else Path(root) / "groups.csv"
    if not groups_path.is_file():
        return {}
    with groups_path.open(newline="") as handle:
        return {row["path"]: row["group"] for row in csv.DictReader(handle)}


def grouped_split(
    samples: list[Sample],
    *,
    fractions: tuple[float, float, float] = (0.70, 0.15, 0.15),
    seed: int = 0,
) -> list[Sample]:
    """Assign whole groups to train/val/test, per class, in the given proportions.

    Groups are shuffled with ``seed`` and filled into val and test until each holds its
    share of the class's images; the rest go to train. Deterministic for a given seed.
    """
    by_class: dict[str, dict[str, list[Sample]]] = defaultdict(lambda: defaultdict(list))
    for sample in samples:
        by_class[sample.label][sample.group].append(sample)
    rng = random.Random(seed)
    assigned: list[Sample] = []
    for label in sorted(by_class):
        groups = sorted(by_class[label].items())
        rng.shuffle(groups)
        total = sum(len(members) for _, members in groups)
        targets = {"val": fractions[1] * total, "test": fractions[2] * total}
        filled = {"val": 0, "test": 0}
        for _, members in groups:
            # Fill the split that is furthest below its target; train takes the rest.
            split = max(("val", "test"), key=lambda s: targets[s] - filled[s])
            if filled[split] + len(members) / 2 > targets[split]:
                split = "train"
            else:
                filled[split] += len(members)
            assigned.extend(replace(m, split=split) for m in members)
    return sorted(assigned, key=lambda s: s.path)


def random_split(
    samples: list[Sample], *, fractions: tuple[float, float, float] = (0.70, 0.15, 0.15), seed: int = 0
) -> list[Sample]:
    """Assign single tiles to splits, ignoring groups: LEAKY, only to compare with papers that do this.

    Near-duplicates of a test tile then sit in the training set, so accuracy is inflated.
    """
    rng = random.Random(seed)
    assigned: list[Sample] = []
    for label in sorted({s.label for s in samples}):
        members = sorted((s for s in samples if s.label == label), key=lambda s: s.path)
        rng.shuffle(members)
        n_val, n_test = round(fractions[1] * len(members)), round(fractions[2] * len(members))
        splits = ["val"] * n_val + ["test"] * n_test + ["train"] * (len(members) - n_val - n_test)
        assigned.extend(replace(m, split=split) for m, split in zip(members, splits))
    return sorted(assigned, key=lambda s: s.path)


def write_manifest(samples: list[Sample], path: str | Path) -> None:
    """Write the split manifest CSV (``path,label,group,split``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["path", "label", "group", "split"])
        for s in samples:
            writer.writerow([s.path, s.label, s.group, s.split])


def read_manifest(path: str | Path) -> list[Sample]:
    """Read a split manifest written by :func:`write_manifest`."""
    with Path(path).open(newline="") as handle:
        rows = [Sample(r["path"], r["label"], r["group"], r["split"]) for r in csv.DictReader(handle)]
    unknown = {r.split for r in rows} - set(SPLITS)
    if unknown:
        raise DatasetError(f"Manifest {path} has unknown splits: {sorted(unknown)}")
    return rows


def manifest_sha256(path: str | Path) -> str:
    """Hash of the manifest file: names exactly which images trained the model."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def leaked_groups(samples: list[Sample]) -> set[str]:
    """Groups that appear in more than one split (must be empty)."""
    splits_of: dict[str, set[str]] = defaultdict(set)
    for s in samples:
        splits_of[s.group].add(s.split)
    return {group for group, splits in splits_of.items() if len(splits) > 1}


def load_split(
    root: str | Path,
    samples: list[Sample],
    *,
    class_ids: list[str],
    size: tuple[int, int],
    cache_dir: str | Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode images once into a ``uint8`` array (N, H, W, 3) plus integer labels.

    With ``cache_dir`` the decoded array is kept as ``.npy`` keyed by the file list and
    size, so repeated runs skip decoding.
    """
    root = Path(root)
    labels = np.array([class_ids.index(s.label) for s in samples], dtype=np.int32)
    cache_file = None
    if cache_dir:
        key = hashlib.sha256(f"{root.resolve()}|{size}|{[s.path for s in samples]}".encode()).hexdigest()[:16]
        cache_file = Path(cache_dir) / f"images-{key}.npy"
        if cache_file.is_file():
            return np.load(cache_file, mmap_mode="r"), labels
    images = np.empty((len(samples), size[0], size[1], 3), dtype=np.uint8)
    for i, s in enumerate(samples):
        images[i] = load_model_input(root / s.path, size=size)
    if cache_file:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache_file, images)
    return images, labels
