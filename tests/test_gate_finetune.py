"""Arm 5 of the tissue gate (training/gate/finetune.py): the split model and the heavy stain policy."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from tests.conftest import HUB_MODEL, missing
from training.data import lab_shift
from training.gate.finetune import FRONT_LAYER, split_model


@pytest.fixture(scope="module")
def bundled():
    if not (HUB_MODEL / "model.keras").is_file():
        missing(f"the bundled model is not at {HUB_MODEL}")
    return keras.saving.load_model(HUB_MODEL / "model.keras", compile=False)


def test_front_then_tail_is_the_served_model(bundled):
    """The cached-front shortcut must reproduce the model's own probabilities and pooled features,
    or arm 5's "current" row would not be today's model."""
    fields = np.random.default_rng(0).integers(0, 256, (4, 224, 224, 3), dtype=np.uint8)
    front, tail = split_model(bundled)
    probabilities, features = tail.predict_on_batch(front.predict_on_batch(fields))
    whole = keras.Model(bundled.inputs, [bundled.outputs[0], bundled.get_layer("features").output])
    expected_p, expected_f = whole.predict_on_batch(fields)
    assert front.output.shape[1:] == bundled.get_layer("densenet121").get_layer(FRONT_LAYER).output.shape[1:]
    np.testing.assert_allclose(probabilities, expected_p, atol=1e-5)
    np.testing.assert_allclose(features, expected_f, atol=1e-4)


def test_the_heavy_policy_moves_colour_further_than_the_mild_one():
    rng = np.random.default_rng(1)
    tile = np.clip(rng.normal((190, 120, 170), 25, (96, 96, 3)), 0, 255).astype(np.uint8)
    pool = np.stack([tile] * 4)
    means = {policy: np.array([lab_shift.lab_stats([lab_shift.augment(tile, policy=policy, rng=rng, pool=pool)])[0]
                               for _ in range(40)])
             for policy in ("stain", "heavy")}
    spread = {policy: float(m.std(axis=0).mean()) for policy, m in means.items()}
    assert spread["heavy"] > 1.5 * spread["stain"], spread


def test_a_random_lab_transfer_lands_on_its_drawn_palette():
    tile = np.clip(np.random.default_rng(2).normal((190, 120, 170), 25, (64, 64, 3)), 0, 255).astype(np.uint8)
    before, _ = lab_shift.lab_stats([tile])
    after = lab_shift.lab_stats([lab_shift.random_lab_transfer(tile, np.random.default_rng(3), shift=(0.0, 0.0, 0.0),
                                                              spread=0.0)])[0]
    np.testing.assert_allclose(after, before, atol=2.0)          # nothing drawn: the tile keeps its palette
    moved = lab_shift.lab_stats([lab_shift.random_lab_transfer(tile, np.random.default_rng(3), shift=(15.0, 0, 0),
                                                              spread=0.0)])[0]
    assert abs(moved[0] - before[0]) > 1.0 and np.allclose(moved[1:], before[1:], atol=2.0)
