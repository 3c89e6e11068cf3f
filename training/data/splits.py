"""Which images train, validate and test: a dataset's own split folders, or a split we make.

Two layouts are accepted, with any number of classes (two or more):

* one folder of class folders (``<root>/<class>/*.jpg``): split by group here, 70/15/15
  (``training.data.samples.grouped_split``; each image is its own group without a groups CSV);
* a dataset that comes split (``<root>/train/<class>/``, ``<root>/test/<class>/`` and, when it
  has one, ``valid/`` or ``val/``): used as given. A missing validation (or test) folder is
  carved out of ``train``: seeded, stratified by class folder, grouped when a groups CSV exists.

An optional class map merges or renames class folders, e.g. for a binary chest-CT model.
Whatever is used ends up in the split manifest (one row per image: path, label, group, split).

Example:
    >>> class_map = parse_class_map("adenocarcinoma=cancer,large_cell_carcinoma=cancer,"
    ...                             "squamous_cell_carcinoma=cancer")
    >>> samples, layout = split_dataset("../shared/data/chest-ct", class_map=class_map, seed=0)
    >>> layout.kind, sorted({s.label for s in samples})
    ('given', ['cancer', 'normal'])
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from training.data.samples import (DatasetError, Sample, grouped_split, index_dataset, leaked_groups, random_split,
                                   read_manifest, write_manifest)

# Split name in the manifest -> folder names a dataset may use for it (first found wins).
SPLIT_FOLDERS = {"train": ("train",), "val": ("valid", "val", "validation"), "test": ("test",)}


class ClassMapError(DatasetError):
    """The class map is malformed or names a class folder the dataset does not have."""

@dataclass(frozen=True)
class Layout:
    """How the splits were obtained, for config.json: ``given`` folders or a ``single`` folder split here."""

    kind: str  # "given" or "single"
    folders: dict[str, str]  # split -> the dataset's folder for it (given splits only)
    carved: tuple[str, ...]  # splits made here, seeded, from train (or from everything)

    def to_dict(self) -> dict:
        return asdict(self)


def layout_of(root: str | Path) -> Layout:
    """The dataset's layout: its own split folders (and which splits are carved here), or one folder.

    Example:
        >>> layout_of("../shared/data/skin-melanoma").carved
        ('val',)
    """
    folders = find_split_folders(root)
    if not folders:
        return Layout(kind="single", folders={}, carved=("val", "test"))
    return Layout(kind="given", folders=folders, carved=tuple(s for s in ("val", "test") if s not in folders))


def find_split_folders(root: str | Path) -> dict[str, str]:
    """``{split: folder}`` when ``root`` comes split (has a ``train`` folder), else ``{}``.

    Example:
        >>> find_split_folders("../shared/data/skin-melanoma")
        {'train': 'train', 'test': 'test'}
    """
    root = Path(root)
    found = {split: next((n for n in names if (root / n).is_dir()), None) for split, names in SPLIT_FOLDERS.items()}
    return {split: name for split, name in found.items() if name} if found["train"] else {}


def parse_class_map(spec: str | Path | dict | None) -> dict[str, str]:
    """A class map from ``"a=x,b=x"``, a JSON file holding ``{"a": "x", ...}``, or a dict.

    Example:
        >>> parse_class_map("adenocarcinoma=cancer, squamous_cell_carcinoma=cancer")
        {'adenocarcinoma': 'cancer', 'squamous_cell_carcinoma': 'cancer'}
    """
    if not spec:
        return {}
    if isinstance(spec, dict):
        mapping = spec
    elif str(spec).endswith(".json") or Path(spec).is_file():
        try:
            mapping = json.loads(Path(spec).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ClassMapError(f"Cannot read class map {spec}: {err}") from None
    else:
        pairs = [item.split("=", 1) for item in str(spec).split(",") if item.strip()]
        if any(len(pair) != 2 for pair in pairs):
            raise ClassMapError(f"Class map {spec!r} must look like 'folder=class,folder=class'.")
        mapping = {key.strip(): value.strip() for key, value in pairs}
    if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, str) and k and v
                                                for k, v in mapping.items()):
        raise ClassMapError(f"Class map {spec!r} must map folder names to non-empty class names.")
    return dict(mapping)


def apply_class_map(samples: list[Sample], class_map: dict[str, str]) -> list[Sample]:
    """Relabel samples; folders not in the map keep their name. Unknown keys are an error (typos)."""
    unknown = set(class_map) - {s.label for s in samples}
    if unknown:
        raise ClassMapError(f"Class map names folders the dataset does not have: {sorted(unknown)}")
    return [replace(s, label=class_map.get(s.label, s.label)) for s in samples]


def check_classes(samples: list[Sample]) -> None:
    """Every class must be trained on, and a classifier needs two classes or more."""
    by_split = {split: {s.label for s in samples if s.split == split} for split in ("train", "val", "test")}
    if len(by_split["train"]) < 2:
        raise DatasetError(f"Need at least 2 classes in train, found {sorted(by_split['train'])}")
    untrained = (by_split["val"] | by_split["test"]) - by_split["train"]
    if untrained:
        raise DatasetError(f"Classes in val/test but not in train: {sorted(untrained)}")
    empty = [split for split, labels in by_split.items() if not labels]
    if empty:
        raise DatasetError(f"No images in split(s) {empty}")


def split_dataset(
    root: str | Path,
    *,
    seed: int = 0,
    class_map: dict[str, str] | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    mode: str = "grouped",
) -> tuple[list[Sample], Layout]:
    """Index ``root`` and assign every image to train/val/test (see the module docstring).

    ``mode="random"`` ignores groups when carving (leaky; for comparison with papers only).
    Splits are carved per class folder, before the class map merges folders, so each merged
    class keeps the proportions of its source folders.
    """
    if not 0 < val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise DatasetError(f"Bad fractions: val {val_fraction}, test {test_fraction}")
    carve = random_split if mode == "random" else grouped_split
    layout = layout_of(root)
    if layout.kind == "given":
        samples = [s for split, folder in layout.folders.items()
                   for s in index_dataset(root, folder=folder, split=split)]
        if layout.carved:
            val, test = (val_fraction if "val" in layout.carved else 0.0), (
                test_fraction if "test" in layout.carved else 0.0)
            train = carve([s for s in samples if s.split == "train"], seed=seed, fractions=(1.0 - val - test, val, test))
            samples = [s for s in samples if s.split != "train"] + train
    else:
        samples = carve(index_dataset(root), seed=seed,
                        fractions=(1.0 - val_fraction - test_fraction, val_fraction, test_fraction))
    samples = sorted(apply_class_map(samples, class_map or {}), key=lambda s: s.path)
    check_classes(samples)
    return samples, layout


def describe_split(samples: list[Sample]) -> str:
    """One line per split with its class counts, e.g. ``'train: benign 850, malignant 850'``."""
    counts = Counter((s.split, s.label) for s in samples)
    labels = sorted({s.label for s in samples})
    return "\n".join(f"{split}: " + ", ".join(f"{label} {counts[split, label]}" for label in labels)
                     for split in ("train", "val", "test"))


def prepare_split(config, *, out: Path, chief: bool = True) -> tuple[list[Sample], Path]:
    """Step 1 of training: load the committed manifest, or split the dataset and write one.

    ``config`` is a ``training.train.TrainConfig`` (data, manifest, seed, class_map, val_fraction,
    split_mode). A worker that is not the chief makes the same seeded split but writes it only
    into its temporary ``out``.

    Example:
        >>> samples, manifest = prepare_split(TrainConfig(data="../shared/data/chest-ct"), out=Path("runs/ct"))
    """
    manifest = Path(config.manifest) if config.manifest else out / "split_manifest.csv"
    if manifest.is_file():
        samples = read_manifest(manifest)
        unmapped = {s.label for s in samples} & {k for k, v in config.class_map.items() if k != v}
        if unmapped:
            raise DatasetError(f"Manifest {manifest} has classes {sorted(unmapped)} that --class-map merges; "
                               "it was written without this class map")
    else:
        samples, _ = split_dataset(config.data, seed=config.seed, class_map=config.class_map,
                                   val_fraction=config.val_fraction, mode=config.split_mode)
        manifest = manifest if chief else out / "split_manifest.csv"
        write_manifest(samples, manifest)
    if config.split_mode == "grouped" and leaked_groups(samples):
        raise DatasetError(f"Manifest {manifest} puts a group in more than one split")
    return samples, manifest
