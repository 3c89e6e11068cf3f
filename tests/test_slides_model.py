"""The bundled lung model on slides (slow: the real model): a field read from the pyramid gets the same
answer as ``Predictor.analyze`` on the same region, at level 0 and at a lower level, and a non-lung
slide is refused by the shared rule."""
from __future__ import annotations

import numpy as np
import pytest

from imageclf.model.predictor import Predictor
from imageclf.slides.slide_model import SlideModel
from imageclf.slides.scoring import score_slide
from scripts.perf.synthetic_slides import lung_mosaic, lung_tiles, write_slide
from tests.conftest import HUB_MODEL, missing, require_dataset

pytestmark = pytest.mark.slow

# A field read from level 1 (the tiles' own pixels) is exactly what ``Predictor.analyze`` answers for the
# same region (same pixels, same resize, same rule). Read from level 0 the pixels differ: level 0
# of the test slide is the 0.25 um/px tiles enlarged 2x (cubic), so a field read there is enlarged and
# shrunk again, and its corner may sit one level-0 pixel apart (snapped to each level's grid). Measured
# on these fields: 2-9 grey levels RMS, probabilities moving by under 0.01 for most fields but up to
# 0.3 for a field near the adenocarcinoma/squamous boundary (2 of 28 changed class). So the typical
# field and the slide's mean are held tight, single fields are not.
MEDIAN_GAP, MEAN_GAP, SAME_CLASS = 0.03, 0.05, 0.85


@pytest.fixture(scope="module")
def predictor():
    if not (HUB_MODEL / "model.keras").is_file():
        missing(f"the bundled model is not at {HUB_MODEL}")
    return Predictor(HUB_MODEL)


@pytest.fixture(scope="module")
def model(predictor):
    return SlideModel.from_predictor(predictor)


def test_fields_at_level0_and_a_lower_level_agree_with_analyze(predictor, model, tmp_path):
    tiles = lung_tiles(require_dataset("external-he") / "lung-tcga")
    mosaic = lung_mosaic([tiles[0], tiles[5]], ["LL"], zoom=2)              # 0.125 um/px at level 0
    slide = write_slide(tmp_path / "zoomed.svs", mosaic, mpp=0.125, downsamples=(1, 2, 8))
    chosen = score_slide(slide, model)                                       # nearest above 0.368: level 1
    finest = score_slide(slide, model, level=0)
    assert chosen.reading["level"] == 1 and chosen.reading["level_um_per_px"] == 0.25
    assert finest.reading["level"] == 0 and len(chosen.fields) == len(finest.fields) >= 8
    # The same level-0 regions, corners snapped to the read level's pixel grid (at most 1 level-0 px apart).
    assert np.abs(chosen.fields.boxes - finest.fields.boxes).max() <= 1
    side = chosen.reading["field_level_px"][0]
    reference = []                 # analyze on each region at the source tiles' own 0.25 um/px, as an upload
    for box in chosen.fields.boxes:
        analysis = predictor.analyze(mosaic.region(int(box[0]), int(box[1]), side, side, 2), scale="native")
        assert analysis.one_field                  # 330 px: one field, resized to the input as the slide path does
        reference.append((analysis.probabilities, analysis.abstain_code))
    for (probabilities, code), row, reason in zip(reference, chosen.fields.probabilities, chosen.fields.reasons,
                                                  strict=True):
        assert np.allclose(probabilities, row, atol=1e-5) and code == (None if reason is None else reason.value)
    expected = np.array([probabilities for probabilities, _ in reference])
    gaps = np.abs(expected - finest.fields.probabilities).max(axis=1)
    assert np.median(gaps) < MEDIAN_GAP, f"level 0 and level 1 fields differ by {np.median(gaps):.3f} (median)"
    assert np.abs(expected.mean(axis=0) - finest.fields.probabilities.mean(axis=0)).max() < MEAN_GAP
    assert np.mean(expected.argmax(axis=1) == finest.fields.top) >= SAME_CLASS


def test_a_skin_slide_is_refused_by_the_shared_rule(model):
    result = score_slide(require_dataset("wsi") / "CMU-1-Small-Region.svs", model)
    assert result.scale.source == "metadata" and result.scale.mpp == pytest.approx(0.499)
    assert result.reading["level"] == 0 and len(result.fields) > 50
    refused = [r for r in result.fields.reasons if r is not None]
    assert len(refused) / len(result.fields) >= 0.5
    assert result.verdict.abstain_code == "fields_refused" and result.verdict.probabilities is None
