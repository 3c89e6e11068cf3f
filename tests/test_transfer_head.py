"""``training.transfer``: the softmax head on cached features, and the feature caches it reads."""
from __future__ import annotations

import numpy as np
import pytest

from training.transfer.features import load_npz, save_npz
from training.transfer.head import Head, fit_head, head_metrics, select_head, training_set


def _blobs(n_per_class: int, *, seed: int, dims: int = 16, spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Three Gaussian clusters in ``dims`` dimensions, on an offset and scale like pooled CNN features."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(0, 3, (3, dims))
    labels = np.repeat(np.arange(3), n_per_class)
    features = 5.0 + 10.0 * (centres[labels] + rng.normal(0, spread, (len(labels), dims)))
    return features.astype(np.float32), labels


def test_head_separates_separable_features_and_is_one_dense_layer():
    x, y = _blobs(60, seed=0)
    head = fit_head(x, y, weight_decay=1e-3)
    test_x, test_y = _blobs(40, seed=1)
    assert (head.logits(test_x).argmax(1) == test_y).mean() > 0.95
    # The standardisation is folded into the kernel: the logits are one matrix product on raw features.
    np.testing.assert_allclose(head.logits(test_x), test_x.astype(np.float64) @ head.kernel + head.bias, rtol=1e-9)
    assert head.kernel.shape == (16, 3) and head.bias.shape == (3,)


def test_head_is_deterministic_and_weight_decay_shrinks_it():
    x, y = _blobs(60, seed=0)
    a, b = fit_head(x, y, weight_decay=1e-3), fit_head(x, y, weight_decay=1e-3)
    np.testing.assert_array_equal(a.kernel, b.kernel)  # convex, full batch, no randomness
    strong = fit_head(x, y, weight_decay=1.0)
    assert np.linalg.norm(strong.kernel) < np.linalg.norm(a.kernel)


def test_select_head_picks_the_decay_with_the_lowest_validation_nll():
    train, val = _blobs(50, seed=2, spread=2.5), _blobs(30, seed=3, spread=2.5)
    head, scores = select_head(train, val, decays=(1e-3, 1.0))
    assert set(scores) == {1e-3, 1.0}
    best = min(scores, key=lambda decay: scores[decay]["val_nll"])
    assert head.weight_decay == best


def test_head_metrics_count_cancer_called_benign():
    x, y = _blobs(30, seed=4)
    # A head that calls everything benign (class 1, lung_n): every cancer tile is called benign.
    benign = Head(kernel=np.zeros((16, 3)), bias=np.array([0.0, 5.0, 0.0]), weight_decay=0.0)
    metrics = head_metrics(benign, 1.0, x, y)
    assert metrics["cancer_called_benign"] == 1.0 and metrics["cancer_sensitivity"] == 0.0
    assert metrics["accuracy"] == pytest.approx(1 / 3, abs=1e-4)  # metrics are rounded to 4 places


def test_feature_cache_round_trip_and_training_set(tmp_path):
    x, y = _blobs(10, seed=5)
    save_npz(tmp_path / "clean-train.npz", x, y, [f"t{i}.png" for i in range(len(y))])
    save_npz(tmp_path / "scale-s0.npz", x[:6] + 1, y[:6], [f"t{i}.png" for i in range(6)])
    features, labels, paths = load_npz(tmp_path / "clean-train.npz")
    np.testing.assert_array_equal(features, x)
    np.testing.assert_array_equal(labels, y)
    assert list(paths[:2]) == ["t0.png", "t1.png"] and not list(tmp_path.glob("*.tmp.npz"))
    clean_only = training_set(tmp_path, "none", [0])
    augmented = training_set(tmp_path, "scale", [0])
    assert len(clean_only[0]) == 30 and len(augmented[0]) == 36 and len(augmented[1]) == 36
