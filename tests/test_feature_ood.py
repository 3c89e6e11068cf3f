"""The feature-space OOD score's contract: numpy only, float32 npz without pickles, a JSON that says how."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from training.calibration import feature_ood


def clusters(rng, n: int, *, width: int = 32, offset: float = 0.0):
    """Three Gaussian classes in ``width`` dims, shifted along every axis by ``offset``."""
    centres = np.eye(3, width) * 6.0 + 10.0
    labels = np.arange(n) % 3
    return centres[labels] + rng.normal(size=(n, width)) + offset, labels


def test_fit_threshold_save_load_and_score(tmp_path):
    rng = np.random.default_rng(0)
    train, labels = clusters(rng, 600)
    val, _ = clusters(rng, 300)
    params = feature_ood.fit(train, labels, dims=8)
    params["threshold"] = feature_ood.threshold_from(feature_ood.score(val, params), quantile=0.99)
    assert np.mean(feature_ood.score(val, params) > params["threshold"]) <= 0.011

    far = 10.0 + rng.normal(size=(200, 32)) * 3.0  # unlike every class
    assert np.mean(feature_ood.score(far, params) > params["threshold"]) > 0.9

    path = feature_ood.save_params(params, tmp_path, fitted_on="three toy clusters")
    info = json.loads((tmp_path / feature_ood.INFO_FILE).read_text())
    assert info["feature_layer"] == "features" and info["dims"] == 8 and info["method"] == feature_ood.METHOD
    assert info["threshold"] == pytest.approx(float(params["threshold"]), rel=1e-6)
    assert {"fitted_on", "threshold", "method", "dims"} <= set(info)
    with np.load(path, allow_pickle=False) as data:  # data only, all float32
        assert all(data[k].dtype == np.float32 for k in data.files)
    loaded = feature_ood.load_params(tmp_path)
    np.testing.assert_allclose(feature_ood.score(val[:5], loaded), feature_ood.score(val[:5], params), rtol=1e-4)


def test_wrong_width_and_missing_arrays_are_named_errors(tmp_path):
    rng = np.random.default_rng(1)
    params = feature_ood.fit(*clusters(rng, 120, width=16), dims=4)
    with pytest.raises(feature_ood.FeatureOODError, match="width"):
        feature_ood.score(np.zeros((2, 17)), params)
    np.savez(tmp_path / feature_ood.PARAMS_FILE, mean=np.zeros(3, np.float32))
    with pytest.raises(feature_ood.FeatureOODError, match="lacks"):
        feature_ood.load_params(tmp_path)


def test_scoring_needs_numpy_only():
    """Serving imports the score without TensorFlow or Keras."""
    code = ("import sys, numpy as np; from training.calibration import feature_ood as f; "
            "p = f.fit(np.random.default_rng(0).normal(size=(50, 6)), np.arange(50) % 2, dims=3); f.score(p['mean'][None], p); "
            "bad = {'tensorflow', 'keras', 'cv2'} & set(sys.modules); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
