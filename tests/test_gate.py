"""The tissue-gate arms (training/gate/) on small synthetic features and images: no real data, no model."""
from __future__ import annotations

import numpy as np
import pytest

from training.gate import table
from training.gate.arms import (GateError, LogisticGate, MahalanobisCheck, pseudo_images, reasons, recentre,
                                threshold_at)
from training.gate.evaluate import either, source_of
from training.gate.table import judge
from training.gate.features import colon_fold

def clustered(n: int, dim: int, centre: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.zeros(dim)
    base[0] = centre
    base[1] = 1.0 - centre
    return base + 0.05 * rng.normal(size=(n, dim))


def test_the_mahalanobis_check_refuses_the_far_cluster_at_a_validation_quantile():
    x = np.concatenate([clustered(60, 16, 0.9, 0), clustered(60, 16, 0.8, 1)])
    y = np.r_[np.zeros(60), np.ones(60)].astype(int)
    check = MahalanobisCheck.fit(x, y, dims=8).with_threshold(clustered(50, 16, 0.85, 2), quantile=0.9)
    assert check.refuses(clustered(30, 16, 0.1, 3)).all()
    assert check.refuses(clustered(200, 16, 0.85, 4)).mean() < 0.3


def test_the_gate_separates_its_two_sides_and_never_refuses_below_one_half():
    lung, other = clustered(80, 12, 0.9, 0), clustered(80, 12, 0.2, 1)
    gate = LogisticGate.fit(lung, other).with_threshold(clustered(40, 12, 0.9, 2), quantile=0.99)
    assert gate.threshold >= 0.5
    assert gate.refuses(clustered(40, 12, 0.2, 3)).mean() > 0.9
    assert gate.refuses(clustered(40, 12, 0.9, 4)).mean() < 0.1
    assert set(gate.arrays()) == {"mean", "scale", "coef", "intercept", "threshold"}
    with pytest.raises(GateError):
        LogisticGate.fit(lung, other[:0])
    with pytest.raises(GateError):
        gate.scores(np.ones((2, 5)))


def test_recentring_moves_each_image_onto_the_training_mean():
    x = np.abs(np.random.default_rng(0).normal(size=(6, 4))) + 1
    images = np.array(["a", "a", "a", "b", "b", "b"])
    train_mean = np.array([0.5, 0.5, 0.5, 0.5])
    out = recentre(x, images, train_mean)
    for image in "ab":
        assert np.allclose(out[images == image].mean(axis=0), train_mean)


def test_pseudo_images_gather_tiles_of_one_key_only():
    keys = np.array(["x"] * 20 + ["y"] * 5)
    ids = pseudo_images(keys, size=9)
    assert len(set(ids[:20])) == 3 and len(set(ids[20:])) == 1
    assert not set(ids[:20]) & set(ids[20:])


def test_reasons_follow_the_served_order():
    probs = np.array([[0.9, 0.05, 0.05], [0.4, 0.3, 0.3], [0.4, 0.3, 0.3], [0.9, 0.05, 0.05]])
    codes = reasons(np.array([False, True, True, True]), np.array([True, True, False, False]), probs, 0.5)
    assert codes.tolist() == ["colour", "feature", "confidence", ""]
    with pytest.raises(GateError):
        reasons(np.ones(2, bool), np.ones(3, bool), probs[:2], 0.5)


def test_thresholds_come_from_validation_scores():
    assert threshold_at(np.arange(101.0), 0.99) == pytest.approx(99.0)
    with pytest.raises(GateError):
        threshold_at(np.array([]))


def test_the_bootstrap_resamples_whole_images():
    values = np.r_[np.ones(9), np.zeros(9)]
    units = np.array(["a"] * 9 + ["b"] * 9)
    mean, low, high = table.by_image(values, units)
    assert mean == 0.5 and low == 0.0 and high == 1.0   # two images: the interval spans both


def test_leave_out_units_and_colon_folds():
    sets = np.array(["nonlung-breast", "nonlung-colorectal-kather", "lung-tcga"])
    assert source_of(sets, "source").tolist() == sets.tolist()
    assert source_of(sets, "lab").tolist() == ["tcga-other-organs", "colorectal-kather", "tcga-lung"]
    assert colon_fold(np.array(["colon_n:4", "colon_aca:7"])).tolist() == [0, 1]
    a = {"k": np.array([True, False])}
    assert either(a, {"k": np.array([False, False])})["k"].tolist() == [True, False]


def _row(name, tcga, organ, benign=0.01, id_rate=0.01):
    return {"arm": name, "refused": {"lung-tcga": (tcga, 0, 1), "nonlung-breast": (organ, 0, 1)},
            "worst_benign": ("x", benign), "id_abstention_worst_seed": id_rate}


def test_the_declared_rule_keeps_current_unless_an_arm_wins_on_both_sides():
    assert judge([_row("current", 0.5, 0.7), _row("a", 0.2, 0.6)]) is None          # fewer organs refused
    assert judge([_row("current", 0.5, 0.7), _row("a", 0.2, 0.8, id_rate=0.05)]) is None
    rows = [_row("current", 0.5, 0.7), _row("a", 0.3, 0.8), _row("b", 0.2, 0.9), _row("c", 0.1, 0.9, benign=0.2)]
    assert judge(rows) == "b"
    assert rows[3]["verdict"].startswith("cancer->benign")


def test_the_rule_also_holds_an_arm_to_the_model_targets_on_its_worst_seed():
    weak = _row("a", 0.1, 0.9) | {"test_accuracy": 0.96, "test_accuracy_worst_seed": 0.94}
    miscalibrated = _row("b", 0.1, 0.9) | {"test_ece": 0.015, "test_ece_worst_seed": 0.03}
    rows = [_row("current", 0.5, 0.7), weak, miscalibrated, _row("c", 0.3, 0.8)]
    assert judge(rows) == "c"
    assert "test accuracy < 95%" in rows[1]["verdict"] and "ECE > 2%" in rows[2]["verdict"]
