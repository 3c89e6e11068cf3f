"""``training/calibration/temperature.py``: temperature fit, ECE, reliability plot, the calibrated model file."""
from __future__ import annotations

import cv2
import keras
import numpy as np
import pytest

from training.calibration.abstention import calibrate_and_fit_abstention
from training.calibration.temperature import (expected_calibration_error, fit_temperature, negative_log_likelihood,
                                              plot_reliability, softmax, with_temperature)
from training.models.architectures import build_model, logits_model


def synthetic(n: int = 20000, *, classes: int = 4, temperature: float = 1.0, seed: int = 0):
    """Calibrated logits z with labels drawn from softmax(z); returns (z * temperature, labels)."""
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(0, 2.0, (n, classes))
    p = softmax(true_logits)
    labels = (rng.random((n, 1)) > np.cumsum(p, axis=1)).sum(axis=1)
    return true_logits * temperature, labels


@pytest.mark.parametrize("true_t", [0.4, 1.0, 2.5, 6.0])
def test_fit_temperature_recovers_a_known_temperature(true_t):
    # Calibrated logits times true_t: over-confident for true_t > 1, under-confident below 1.
    logits, labels = synthetic(temperature=true_t, seed=1)
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(true_t, rel=0.05)
    # and it is really the minimum of the NLL nearby
    nll = negative_log_likelihood(logits, labels, fitted)
    assert nll <= negative_log_likelihood(logits, labels, fitted * 1.1)
    assert nll <= negative_log_likelihood(logits, labels, fitted / 1.1)


def test_fit_temperature_rejects_bad_input():
    with pytest.raises(ValueError):
        fit_temperature(np.zeros((3, 2)), np.array([0, 1]))
    with pytest.raises(ValueError):
        fit_temperature(np.zeros((0, 2)), np.array([], int))


def test_ece_by_hand():
    assert expected_calibration_error(np.array([[0.9, 0.1], [0.9, 0.1]]), np.array([0, 1])) == pytest.approx(0.4)
    # Two bins: 0.6 (right) and 1.0 (right): |1-0.6|/2 + |1-1|/2
    probs = np.array([[0.6, 0.4], [1.0, 0.0]])
    assert expected_calibration_error(probs, np.array([0, 0]), bins=10) == pytest.approx(0.2)


def test_ece_is_small_when_calibrated_and_large_when_overconfident():
    logits, labels = synthetic()
    assert expected_calibration_error(softmax(logits), labels) < 0.015
    over = expected_calibration_error(softmax(logits * 3.0), labels)
    under = expected_calibration_error(softmax(logits * 0.3), labels)
    assert over > 0.1 and under > 0.1
    # Temperature scaling repairs the over-confident model.
    t = fit_temperature(logits * 3.0, labels)
    assert expected_calibration_error(softmax(logits * 3.0, t), labels) < 0.015


def test_reliability_plot_is_a_png(tmp_path):
    logits, labels = synthetic(2000)
    path = tmp_path / "reliability.png"
    plot_reliability(softmax(logits * 3), softmax(logits), labels, path)
    image = cv2.imread(str(path))
    assert image is not None and image.shape[0] > 300 and image.shape[1] > 300


@pytest.fixture(scope="module")
def small_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return build_model(num_classes=3, input_size=(32, 32), work_size=None, name="small")


def test_logits_model_gives_the_logits(small_model):
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    logits = np.asarray(logits_model(small_model)(x, training=False))
    probs = np.asarray(small_model(x, training=False))
    np.testing.assert_allclose(softmax(logits), probs, atol=1e-5)


def test_with_temperature_saves_loads_safely_and_matches_scaled_softmax(small_model, tmp_path):
    # Bigger logits than an untrained model's, so the temperature visibly changes the output.
    dense = small_model.get_layer("logits")
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel * 40, bias])
    x = np.random.default_rng(1).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    logits = np.asarray(logits_model(small_model)(x, training=False), np.float64)
    assert np.abs(logits).max() > 1.0

    calibrated = with_temperature(small_model, 2.5)
    path = tmp_path / "calibrated.keras"
    calibrated.save(path)
    loaded = keras.saving.load_model(path, compile=False, safe_mode=True)
    assert [layer.name for layer in loaded.layers[-3:]] == ["logits", "temperature", "probabilities"]
    got = np.asarray(loaded.predict(x, verbose=0), np.float64)
    np.testing.assert_allclose(got, softmax(logits, 2.5), atol=1e-5)
    assert not np.allclose(got, softmax(logits), atol=1e-3)  # the temperature did something
    np.testing.assert_array_equal(got.argmax(1), logits.argmax(1))  # and changed no decision
    # the original model is untouched; re-calibrating replaces rather than stacks temperatures
    np.testing.assert_allclose(np.asarray(small_model(x, training=False)), softmax(logits), atol=1e-5)
    again = with_temperature(loaded, 0.5)
    np.testing.assert_allclose(np.asarray(again(x, training=False)), softmax(logits, 0.5), atol=1e-5)
    assert sum(layer.name == "temperature" for layer in again.layers) == 1


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_with_temperature_rejects_nonsense(small_model, bad):
    with pytest.raises(ValueError):
        with_temperature(small_model, bad)


def test_calibrate_and_fit_abstention_returns_model_and_summary(small_model):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (60, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, 60)
    calibrated, info = calibrate_and_fit_abstention(small_model, images, labels, stain_check=False)
    assert set(info) >= {"temperature", "ece_before", "ece_after", "abstain"}
    assert info["nll_after"] <= info["nll_before"] + 1e-9  # T=1 is one of the candidates
    assert info["abstain"]["method"] == "softmax" and info["abstain"]["colour"] is None
    logits = np.asarray(logits_model(small_model)(images[:4], training=False))
    np.testing.assert_allclose(np.asarray(calibrated(images[:4], training=False)),
                               softmax(logits, info["temperature"]), atol=1e-4)
