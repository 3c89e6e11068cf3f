"""Grouped k-fold manifests: each group tested exactly once, never split across train/val/test."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from tests.conftest import ROOT
from training.data.folds import grouped_folds, main, summarise
from training.data.samples import index_dataset, leaked_groups, read_manifest
from training.evaluation.uncertainty import group_bootstrap_ci


def test_every_group_is_tested_exactly_once(tiny_dataset):
    samples = index_dataset(tiny_dataset)
    folds = grouped_folds(samples, folds=4, seed=1)
    assert len(folds) == 4
    tested = Counter(s.path for fold in folds for s in fold if s.split == "test")
    assert set(tested) == {s.path for s in samples} and set(tested.values()) == {1}
    for fold in folds:
        assert not leaked_groups(fold)
        assert {s.path for s in fold} == {s.path for s in samples}
        # every class appears in every split of every fold (stratified by class)
        for split in ("train", "val", "test"):
            assert {s.label for s in fold if s.split == split} == {"alpha", "beta", "gamma"}
    assert grouped_folds(samples, folds=4, seed=1) == folds  # deterministic
    with pytest.raises(ValueError):
        grouped_folds(samples, folds=1)


def test_committed_lung_folds_cover_the_dataset_without_leakage(lung_data):
    folds = [read_manifest(ROOT / f"training/splits/folds/fold-{k}.csv") for k in range(5)]
    tested = Counter(s.path for fold in folds for s in fold if s.split == "test")
    assert len(tested) == 15000 and set(tested.values()) == {1}
    assert all(not leaked_groups(fold) for fold in folds)


def test_summary_gives_mean_std_and_pooled_accuracy(tmp_path, capsys):
    runs = []
    for k, (matrix, ece) in enumerate((([[9, 1], [0, 10]], 0.02), ([[10, 0], [2, 8]], 0.04))):
        run = tmp_path / f"fold-{k}"
        run.mkdir()
        correct = matrix[0][0] + matrix[1][1]
        (run / "metrics.json").write_text(json.dumps({
            "accuracy": correct / 20, "macro_f1": correct / 20, "cancer_sensitivity": 1.0,
            "confusion_matrix": {"rows_true_cols_pred": matrix},
            "calibration": {"ece_15_bins_test_after": ece}}))
        runs.append(run)
    result = summarise(runs)
    assert result["accuracy"]["mean"] == pytest.approx(0.925)
    assert result["accuracy"]["std"] == pytest.approx(0.0353553, abs=1e-6)
    assert result["ece_test"]["mean"] == pytest.approx(0.03)
    assert result["pooled_accuracy"] == pytest.approx(37 / 40)
    main(["summary", *map(str, runs), "--out", str(tmp_path / "s.json"), "--markdown", str(tmp_path / "cv.md")])
    assert "accuracy" in capsys.readouterr().out
    table = (tmp_path / "cv.md").read_text()
    assert "| 1 | 20 | 90.00% |" in table and "**92.50% +/- 3.54%**" in table and "92.50%." in table
    assert json.loads((tmp_path / "s.json").read_text())["pooled_test_tiles"] == 40


def test_group_bootstrap_interval_is_wider_than_tile_bootstrap_when_errors_cluster():
    # 50 groups of 20 tiles; 3 groups entirely wrong: 94% accuracy.
    groups = [f"g{i // 20}" for i in range(1000)]
    correct = [not (i // 20 < 3) for i in range(1000)]
    by_group = group_bootstrap_ci(correct, groups, seed=1)
    by_tile = group_bootstrap_ci(correct, [str(i) for i in range(1000)], seed=1)
    assert by_group["groups"] == 50 and by_tile["groups"] == 1000
    assert by_group["low"] < 0.94 < by_group["high"]
    assert (by_group["high"] - by_group["low"]) > 3 * (by_tile["high"] - by_tile["low"])
    assert np.isclose(group_bootstrap_ci([1, 1], ["a", "b"])["low"], 1.0)
