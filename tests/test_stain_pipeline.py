"""The stain step of the model contract on every path: a model folder with a ``stain`` block gets every
field mapped to its reference stains before the engine (image, tiles one field each, slide), the colour
check still judges the pixels as sent, and every answer says what was done (``stain_normalisation``)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from imageclf.core import rule, stain
from imageclf.core.engine import FieldOutputs
from imageclf.model.predictor import Predictor
from imageclf.slides.scoring import score_slide
from imageclf.slides.slide_model import SlideModel
from scripts.perf.synthetic_slides import lung_mosaic, lung_tiles, write_slide
from tests.conftest import HUB_MODEL, require_dataset
from tests.support.slides import TINY_MPP
from tests.support.tiny_model import write_tiny_model_folder


class Spy:
    """A field engine that records what the model was shown, then runs the real one."""

    def __init__(self, inner):
        self.inner, self.seen = inner, []

    def run(self, fields: np.ndarray) -> FieldOutputs:
        self.seen.append(np.array(fields, copy=True))
        return self.inner.run(fields)


@pytest.fixture(scope="module")
def tiles():
    return lung_tiles(require_dataset("external-he") / "lung-tcga")


@pytest.fixture(scope="module")
def stained_folder(tiles, tmp_path_factory):
    """The tiny model with the lung model's scale block and a stain block fitted on TCGA crops."""
    crops = np.stack([t[:224, :224] for t in tiles])
    constants = stain.StainSpec(matrix=((1, 0), (0, 1), (0, 0)), max_concentrations=(1, 1))
    matrix, maxima = stain.fit_reference(crops, constants)
    block = stain.StainSpec(matrix=tuple(map(tuple, matrix)), max_concentrations=tuple(maxima), fitted_on="test").to_dict()
    scale = dict(json.loads((HUB_MODEL / "config.json").read_text())["scale"], microns_per_pixel=TINY_MPP)
    return write_tiny_model_folder(tmp_path_factory.mktemp("stained") / "m", config_extra={"stain": block, "scale": scale})


def test_an_image_is_normalised_once_from_its_own_fields_and_says_so(stained_folder, tiles):
    predictor = Predictor(stained_folder)
    spy = Spy(predictor.engine)
    image = tiles[0][:500, :500]
    analysis = rule.analyze(predictor.request(image, "native"), predictor.spec, spy)
    expected_estimate = stain.estimate_stains(rule.plan(predictor.request(image, "native"), predictor.spec)
                                              .fields.source.read(0, 100), predictor.spec.stain)
    shown = np.concatenate(spy.seen)
    sent = rule.plan(predictor.request(image, "native"), predictor.spec).fields.source.read(0, len(shown))
    assert analysis.to_json()["stain_normalisation"]["applied"] is True
    assert not np.array_equal(shown, sent)                                   # the model saw normalised pixels
    assert np.array_equal(shown, stain.normalise(sent, expected_estimate, predictor.spec.stain))
    if analysis.one_field:                 # Grad-CAM and the page get the field as sent, not normalised
        assert np.array_equal(analysis.model_input, sent[0])


def test_tiles_sent_one_field_each_are_each_estimated_from_themselves(stained_folder, tiles):
    predictor = Predictor(stained_folder)
    spy = Spy(predictor.engine)
    predictor.engine = spy
    crops = [t[:300, :300] for t in tiles[:3]]
    table = predictor.classify_fields(crops)
    sent = np.stack([predictor.prepare(c) for c in crops])
    assert len(table) == 3 and np.array_equal(np.concatenate(spy.seen), stain.normalise_each(sent, predictor.spec.stain)[0])


def test_a_blank_image_keeps_its_colours_and_the_answer_says_why(stained_folder):
    predictor = Predictor(stained_folder)
    result = predictor.analyze(np.full((64, 64, 3), 245, np.uint8), scale="native").to_json()
    assert result["stain_normalisation"]["applied"] is False
    assert result["stain_normalisation"]["status"] == stain.TOO_LITTLE_TISSUE


def test_a_slide_is_normalised_with_one_estimate_from_its_tissue(stained_folder, tiles, tmp_path):
    model = SlideModel.from_folder(stained_folder)
    spy = Spy(model.engine)
    slide = write_slide(tmp_path / "lung.svs", lung_mosaic(tiles, ["L.", ".L"]), mpp=0.25)
    result = score_slide(slide, SlideModel(model.spec, spy, model.name, model.revision, model.mpp))
    assert result.stain is not None and result.stain.ok and len(result.fields) > 0
    assert sum(len(s) for s in spy.seen) == len(result.fields)
    assert json.loads(json.dumps(result.stain.to_dict()))["applied"] is True
