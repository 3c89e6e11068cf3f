"""The feature-space check as served: config.json's feature_ood block, its file and its verdicts."""
from __future__ import annotations

import hashlib
import json

import keras
import numpy as np
import pytest

from imageclf.core.refusal import Reason
from imageclf.model.config_blocks import FeatureOODSpec
from imageclf.model.feature_check import FeatureCheck, FeatureOODError, load_params, score
from imageclf.model.predictor import ModelFolderError, Predictor
from tests.support.tiny_model import write_tiny_model_folder
from training.calibration.feature_ood import fit
from tests.support.field_rows import field_rows, one_field


def _images(seed: int, n: int) -> np.ndarray:
    """Reddish noise images: the 'training distribution' of this test."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 120, (n, 64, 64, 3), dtype=np.uint8)
    images[..., 0] += 120
    return images


def _fit(features: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """The same fit training uses (training/calibration/feature_ood.py)."""

    return fit(features, labels, dims=4)


@pytest.fixture
def checked_folder(tmp_path):
    folder = write_tiny_model_folder(tmp_path / "model")
    model = keras.saving.load_model(folder / "model.keras", compile=False)
    features = keras.Model(model.inputs, model.get_layer("features").output)
    train = np.asarray(features.predict(_images(0, 120), verbose=0))
    params = _fit(train, np.arange(120) % 3)
    val = score(np.asarray(features.predict(_images(1, 60), verbose=0)), params)
    params["threshold"] = np.array(np.quantile(val, 0.99), np.float32)
    np.savez(folder / "feature_ood.npz", **{k: np.asarray(v, np.float32) for k, v in params.items()})
    config = json.loads((folder / "config.json").read_text())
    config["feature_ood"] = {"method": "pca-mahalanobis-min-class-v1", "feature_layer": "features",
                             "params_file": "feature_ood.npz", "threshold": float(params["threshold"]),
                             "params_sha256": hashlib.sha256((folder / "feature_ood.npz").read_bytes()).hexdigest()}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_unfamiliar_fields_abstain_with_the_feature_reason(checked_folder):
    predictor = Predictor(checked_folder)
    familiar = field_rows(predictor, list(_images(2, 20)))
    assert np.mean([not r["abstained"] for r in familiar]) >= 0.9
    assert all(r["feature_score"] is not None for r in familiar)
    green = np.zeros((64, 64, 3), np.uint8)
    green[..., 1] = np.random.default_rng(3).integers(100, 255, (64, 64), dtype=np.uint8)
    result = one_field(predictor, green)
    assert result["feature_score"] > predictor.feature_check.threshold
    assert result["abstained"] and result["abstain_code"] == Reason.FEATURE.value
    assert result["abstain_reason"] == Reason.FEATURE.sentence()


def test_the_parameters_file_must_be_the_fitted_one(checked_folder):
    path = checked_folder / "feature_ood.npz"
    params = load_params(path)
    params["threshold"] = np.array(1e9, np.float32)   # a swapped file that would never refuse
    np.savez(path, **params)
    with pytest.raises(ModelFolderError, match="sha256"):
        Predictor(checked_folder)
    path.unlink()
    with pytest.raises(ModelFolderError, match="not found"):
        Predictor(checked_folder)


def test_unknown_method_and_missing_arrays_are_refused(tmp_path):
    with pytest.raises(FeatureOODError, match="unknown"):
        FeatureCheck.from_config(FeatureOODSpec(method="magic", params_file="x.npz", params_sha256=None, threshold=1.0), folder=tmp_path)
    np.savez(tmp_path / "bad.npz", mean=np.zeros(3, np.float32))
    with pytest.raises(FeatureOODError, match="lacks"):
        load_params(tmp_path / "bad.npz")
