"""Stain normalisation (imageclf.core.stain) on synthetic two-stain images with known stain vectors:
the estimate recovers them, normalising to one's own reference changes little, a faint stain is
brought back, and failures (no tissue, one stain) are outcomes, not exceptions."""
from __future__ import annotations

import numpy as np
import pytest

from imageclf.core import stain
from imageclf.core.stain import StainSpec
from imageclf.model.config_blocks import ConfigError, parse_block

H = np.array([0.65, 0.70, 0.29])
E = np.array([0.07, 0.99, 0.11])


def synthetic_he(seed: int, *, h=H, e=E, strength=1.0, side=64) -> np.ndarray:
    """An image made of two stains with known vectors: blobs of haematoxylin on an eosin background."""
    rng = np.random.default_rng(seed)
    ch = np.clip(rng.gamma(2.0, 0.35, (side, side)), 0, 2.5) * strength
    ce = np.clip(rng.gamma(3.0, 0.2, (side, side)), 0, 2.0) * strength
    od = ch[..., None] * (h / np.linalg.norm(h)) + ce[..., None] * (e / np.linalg.norm(e))
    return np.clip(240.0 * np.exp(-od) - 1.0, 0, 255).astype(np.uint8)


def reference_of(tiles) -> StainSpec:
    constants = StainSpec(matrix=((1, 0), (0, 1), (0, 0)), max_concentrations=(1, 1))
    matrix, maxima = stain.fit_reference(np.stack(tiles), constants)
    return StainSpec(matrix=tuple(map(tuple, matrix)), max_concentrations=tuple(maxima))


def test_the_stain_matrix_is_recovered_from_a_two_stain_image():
    spec = reference_of([synthetic_he(0, side=128)])
    estimate = stain.estimate_stains(synthetic_he(1, side=128), spec)
    assert estimate.ok and estimate.angle_deg > 20
    for column, truth in zip(estimate.matrix.T, (H, E)):
        assert np.dot(column, truth / np.linalg.norm(truth)) > 0.97


def test_normalising_to_its_own_reference_changes_little_and_a_weaker_stain_is_brought_back():
    tiles = [synthetic_he(s) for s in range(6)]
    spec = reference_of(tiles)
    pair = np.stack(tiles[:2])
    same = stain.normalise(pair, stain.estimate_stains(pair, spec), spec)
    assert np.abs(same.astype(int) - pair).mean() < 8
    faint = np.stack([synthetic_he(9, strength=0.5)])
    back = stain.normalise(faint, stain.estimate_stains(faint, spec), spec)
    assert back.mean() < faint.mean() - 10   # darker again: concentrations rescaled to the reference's


def test_one_estimate_per_image_maps_its_fields_alike_and_each_tile_alone_differs():
    spec = reference_of([synthetic_he(s) for s in range(4)])
    fields = np.stack([synthetic_he(20, strength=0.6), synthetic_he(21, strength=1.2)])
    together = stain.normalise(fields, stain.estimate_stains(fields, spec), spec)
    alone, statuses = stain.normalise_each(fields, spec)
    assert statuses == [stain.NORMALISED] * 2
    assert not np.array_equal(together, alone)   # each tile alone is stretched to the reference on its own


def test_no_tissue_and_a_single_stain_are_recorded_outcomes_and_the_fields_keep_their_colours():
    spec = reference_of([synthetic_he(1)])
    blank = np.full((2, 32, 32, 3), 250, np.uint8)
    estimate = stain.estimate_stains(blank, spec)
    assert estimate.status == stain.TOO_LITTLE_TISSUE and not estimate.to_dict()["applied"]
    assert np.array_equal(stain.normalise(blank, estimate, spec), blank)
    haematoxylin_only = synthetic_he(3, e=H)        # both "stains" the same vector
    single = stain.estimate_stains(haematoxylin_only, spec)
    assert single.status == stain.SINGLE_STAIN and single.angle_deg < spec.min_angle_deg
    with pytest.raises(ValueError, match="No reference tile"):
        reference_of([blank[0]])


def test_the_block_round_trips_through_config_parsing_and_refuses_unknown_fields():
    spec = reference_of([synthetic_he(s) for s in range(3)])
    again = parse_block("stain", spec.to_dict())
    assert again == spec
    with pytest.raises(ConfigError, match="does not know"):
        parse_block("stain", {**spec.to_dict(), "gamma": 2})
    with pytest.raises(ConfigError, match="on_failure"):
        parse_block("stain", {**spec.to_dict(), "on_failure": "guess"})
