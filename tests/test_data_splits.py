"""Datasets that come split (train/valid/test folders), carved validation splits, class maps, N classes."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from training.data.samples import DatasetError, leaked_groups, read_manifest
from training.data.splits import (ClassMapError, apply_class_map, find_split_folders, layout_of, parse_class_map,
                                  split_dataset)
from training.evaluation.evaluate import classification_metrics
from training.train import TrainConfig, train

from .conftest import ROOT, make_image_dataset, require_dataset

CT_BINARY_MAP = "adenocarcinoma=cancer,large_cell_carcinoma=cancer,squamous_cell_carcinoma=cancer"


def make_split_dataset(root: Path, *, folders=("train", "test"), classes=("alpha", "beta", "gamma"),
                       per_class=(30, 6), groups_of=0) -> Path:
    """``root/<folder>/<class>/*.png`` (the first folder gets per_class[0] images a class, others [1])."""
    lines = ["path,label,group"]
    for i, folder in enumerate(folders):
        make_image_dataset(root / folder, classes=classes, per_class=per_class[min(i, 1)], size=24,
                           groups_of=groups_of or 1)
        rows = (root / folder / "groups.csv").read_text().splitlines()[1:]
        (root / folder / "groups.csv").unlink()  # a dataset's groups file sits at its root
        lines += [f"{folder}/{path},{label},{folder}-{group}" for path, label, group in (r.split(",") for r in rows)]
    if groups_of:
        (root / "groups.csv").write_text("\n".join(lines) + "\n")
    return root


def test_split_folders_are_used_as_given(tmp_path):
    root = make_split_dataset(tmp_path / "d", folders=("train", "valid", "test"))
    assert find_split_folders(root) == {"train": "train", "val": "valid", "test": "test"}
    samples, layout = split_dataset(root, seed=0)
    assert layout.kind == "given" and layout.carved == ()
    # Every image keeps the split of its folder; "valid" is the validation split.
    folder_split = {"train": "train", "valid": "val", "test": "test"}
    assert all(s.split == folder_split[s.path.split("/")[0]] for s in samples)
    assert Counter(s.split for s in samples) == {"train": 90, "val": 18, "test": 18}


def test_val_folder_name_val_is_recognised(tmp_path):
    root = make_split_dataset(tmp_path / "d", folders=("train", "val", "test"))
    assert layout_of(root).folders == {"train": "train", "val": "val", "test": "test"}


def test_missing_validation_is_carved_from_train_stratified_and_seeded(tmp_path):
    root = make_split_dataset(tmp_path / "d", per_class=(40, 8))
    samples, layout = split_dataset(root, seed=1, val_fraction=0.25)
    assert layout.carved == ("val",)
    val = Counter(s.label for s in samples if s.split == "val")
    assert val == {"alpha": 10, "beta": 10, "gamma": 10}  # 25% of each class's 40 training images
    assert all(s.path.startswith("train/") for s in samples if s.split == "val")
    assert all(s.path.startswith("test/") for s in samples if s.split == "test")  # the test folder is untouched
    assert split_dataset(root, seed=1, val_fraction=0.25)[0] == samples
    assert split_dataset(root, seed=2, val_fraction=0.25)[0] != samples


def test_carved_validation_keeps_groups_whole(tmp_path):
    root = make_split_dataset(tmp_path / "d", per_class=(40, 8), groups_of=4)
    samples, _ = split_dataset(root, seed=0)
    assert len({s.group for s in samples}) < len(samples)  # the groups CSV was read
    assert not leaked_groups(samples)
    assert {s.split for s in samples} == {"train", "val", "test"}


def test_class_map_parses_strings_and_json_files(tmp_path):
    assert parse_class_map(" a = x , b=x ") == {"a": "x", "b": "x"}
    (tmp_path / "map.json").write_text(json.dumps({"a": "x"}))
    assert parse_class_map(tmp_path / "map.json") == {"a": "x"}
    assert parse_class_map(None) == {} == parse_class_map("")
    with pytest.raises(ClassMapError, match="folder=class"):
        parse_class_map("a-x")
    with pytest.raises(ClassMapError, match="non-empty"):
        parse_class_map({"a": ""})


def test_class_map_merges_classes_and_rejects_unknown_folders(tmp_path):
    root = make_split_dataset(tmp_path / "d", per_class=(40, 8))
    samples, _ = split_dataset(root, seed=0, class_map={"alpha": "ab", "beta": "ab"})
    assert Counter(s.label for s in samples if s.split == "test") == {"ab": 16, "gamma": 8}
    # Carved per source folder before merging: alpha and beta each give 15% of their images.
    assert Counter(s.path.split("/")[1] for s in samples if s.split == "val") == {"alpha": 6, "beta": 6, "gamma": 6}
    with pytest.raises(ClassMapError, match="delta"):
        apply_class_map(samples, {"delta": "x"})


def test_a_class_missing_from_train_is_refused(tmp_path):
    root = make_split_dataset(tmp_path / "d", per_class=(40, 8))
    make_image_dataset(tmp_path / "extra", classes=("omega",), per_class=4, size=24)
    (tmp_path / "extra" / "omega").rename(root / "test" / "omega")
    with pytest.raises(DatasetError, match="omega"):
        split_dataset(root, seed=0)


@pytest.mark.parametrize("classes,benign,expected", [
    (["benign", "malignant"], ("benign",), 0.75),      # 2 classes: malignant recall
    (["aca", "large", "normal", "scc"], ("normal",), 1.0),  # 4: a cancer called another cancer is caught
])
def test_cancer_sensitivity_for_two_and_four_classes(classes, benign, expected):
    n = len(classes)
    if n == 2:
        y_true, y_pred = [1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 1]
    else:
        y_true, y_pred = [0, 1, 3, 3, 2], [1, 0, 0, 3, 2]
    metrics = classification_metrics(np.array(y_true), np.eye(n)[y_pred], class_ids=classes, benign_classes=benign)
    assert metrics["cancer_sensitivity"] == expected
    assert len(metrics["confusion_matrix"]["rows_true_cols_pred"]) == n


def test_committed_chest_ct_manifests_are_the_dataset_as_given():
    data = require_dataset("chest-ct")
    for name, class_map in (("chest-ct.csv", None), ("chest-ct-binary.csv", parse_class_map(CT_BINARY_MAP))):
        committed = read_manifest(ROOT / "training" / "splits" / name)
        assert committed == split_dataset(data, seed=0, class_map=class_map)[0]
        assert all((data / s.path).is_file() for s in committed[::50])
    binary = read_manifest(ROOT / "training" / "splits" / "chest-ct-binary.csv")
    assert Counter(s.label for s in binary if s.split == "test") == {"cancer": 261, "normal": 54}
    assert Counter(s.split for s in binary) == {"train": 613, "val": 72, "test": 315}


def test_committed_skin_manifest_carves_validation_from_train_only():
    data = require_dataset("skin-melanoma")
    committed = read_manifest(ROOT / "training" / "splits" / "skin-melanoma.csv")
    assert committed == split_dataset(data, seed=0)[0]
    counts = Counter((s.split, s.label) for s in committed)
    assert counts == {("train", "benign"): 850, ("train", "malignant"): 850, ("val", "benign"): 150,
                      ("val", "malignant"): 150, ("test", "benign"): 499, ("test", "malignant"): 500}
    assert all(s.path.startswith("test/") == (s.split == "test") for s in committed)


def test_training_uses_the_given_split_and_the_class_map(tmp_path):
    root = make_split_dataset(tmp_path / "d", per_class=(30, 6))
    out = tmp_path / "model"
    metrics = train(TrainConfig(allow_dirty=True, data=str(root), out=str(out), input_size=32, work_size=None, epochs=3, batch_size=16,
                                verbose=0, class_map={"beta": "other", "gamma": "other"}))
    labels = json.loads((out / "labels.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert [labels[str(i)]["id"] for i in range(len(labels))] == config["labels"] == ["alpha", "other"]
    assert config["training_run"]["class_map"] == {"beta": "other", "gamma": "other"}
    assert config["data_layout"] == {"kind": "given", "folders": {"train": "train", "test": "test"}, "carved": ["val"]}
    # The manifest records what was used: the test folder as test, validation carved from train/.
    rows = read_manifest(out / "split_manifest.csv")
    assert sorted(s.path for s in rows if s.split == "test") == sorted(
        p.relative_to(root).as_posix() for p in (root / "test").rglob("*.png"))
    assert {s.path.split("/")[0] for s in rows if s.split == "val"} == {"train"}
    assert {s.label for s in rows} == {"alpha", "other"}
    assert set(metrics["per_class"]) == {"alpha", "other"} and metrics["num_images"] == 18
    assert "## Results on the held-out test split (split by group, never by image)" in (out / "README.md").read_text()
