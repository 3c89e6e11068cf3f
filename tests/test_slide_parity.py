"""The same pixels scored as an image and as a whole-slide image give the same field verdicts.

An image of real lung tiles (MoNuSeg TCGA, resampled to the bundled model's microns per pixel) is
scored by the image rule (``imageclf.core.rule.analyze``, scale stated as the model's own, so no
nucleus estimate and no resampling), then written as a pyramidal Aperio slide with ``|MPP =`` the
model's own and scored by ``imageclf.slides.scoring.score_slide`` (scale from the metadata, fields
read lazily from level 0). At a scale of exactly 1 both lay the same grid (``core.fields.tile_grid``)
over the same pixels, so the image's boxes (pixels of its resampled view) and the slide's (level-0
pixels) are the same numbers.

What is compared, field by field on the fields both scored (matched by box): the class, the refusal
code, and every probability (within 1e-4: the two paths put a field in different batches). What is
not, and why: which fields count as tissue (the image judges each field on the full-resolution view,
the slide on a thumbnail mask, so the edges of the glass differ: only the fields both kept are
compared, and most must be), the tissue shares (the same two masks), and the slide's verdict (the
mean of a different set of fields). For a model with a stain block the two inputs' stain estimates
come from different samples by design (all of an image's fields, up to 32 spread fields of a slide),
so the stain step is left out of the comparison: both paths then feed the engine the pixels as read.
"""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from imageclf.core.request import make_request
from imageclf.core.rule import analyze
from imageclf.core.scale import ScaleRequest
from imageclf.slides.reader import SlideReader
from imageclf.slides.scoring import score_slide
from imageclf.slides.slide_model import SlideModel
from scripts.perf.synthetic_slides import GLASS, Mosaic, lung_tiles, write_slide
from tests.conftest import HUB_MODEL, require_dataset

pytestmark = pytest.mark.slow
TILE_MPP = 0.25                 # the MoNuSeg tiles' microns per pixel (40x)
LAYOUT = ["LLL", "L.L", "LL."]  # lung tiles and blank glass, so tissue and background fields both occur
LAYOUT_TILES = sum(line.count("L") for line in LAYOUT)
BLOCK = 500                     # px of each tile kept, at the model's scale


@pytest.fixture(scope="module")
def model() -> SlideModel:
    loaded = SlideModel.from_folder(HUB_MODEL)
    # The stain estimate is a per-input sample by design (see the module docstring): compared without it.
    return dataclasses.replace(loaded, spec=dataclasses.replace(loaded.spec, stain=None))


@pytest.fixture(scope="module")
def image(model) -> np.ndarray:
    """Real lung tiles resampled to the model's microns per pixel, a BLOCK px crop of each, on glass, as one
    square RGB image (7 x 7 fields: under the image rule's cap, so the image scores all its tissue fields)."""
    tiles = lung_tiles(require_dataset("external-he") / "lung-tcga")
    side = round(tiles[0].shape[0] * TILE_MPP / model.mpp)
    canvas = np.empty((BLOCK * len(LAYOUT), BLOCK * len(LAYOUT[0]), 3), np.uint8)
    canvas[:] = GLASS
    picks = iter(tiles[len(tiles) - LAYOUT_TILES:])       # both classes: adenocarcinoma and squamous tiles
    for row, line in enumerate(LAYOUT):
        for col, char in enumerate(line):
            if char == "L":
                tile = cv2.resize(next(picks), (side, side), interpolation=cv2.INTER_AREA)
                canvas[row * BLOCK:(row + 1) * BLOCK, col * BLOCK:(col + 1) * BLOCK] = tile[:BLOCK, :BLOCK]
    return canvas


def by_box(boxes, probabilities, codes) -> dict[tuple[int, ...], tuple[np.ndarray, str | None]]:
    return {tuple(int(v) for v in box): (np.asarray(p, np.float64), code)
            for box, p, code in zip(boxes, probabilities, codes, strict=True)}


def test_an_image_and_the_same_pixels_as_a_slide_give_the_same_field_verdicts(model, image, tmp_path):
    analysis = analyze(make_request(image, ScaleRequest("microns_per_pixel", model.mpp)), model.spec, model.engine)
    assert analysis.scale.relative_size == pytest.approx(1.0) and analysis.view.shape == image.shape
    size = tuple(model.spec.input_size)
    picked = [cell for cell in analysis.fields.cells if cell.status == "classified"]
    as_image = by_box([(c.x, c.y, size[1], size[0]) for c in picked], [c.probabilities for c in picked],
                      [None if c.reason is None else c.reason.value for c in picked])

    slide = write_slide(tmp_path / "same.svs", Mosaic(1, 1, image.shape[0], {(0, 0): image}), mpp=model.mpp)
    with SlideReader(slide) as reader:          # the same pixels, to the bit, at level 0
        assert np.array_equal(reader.read(0, 0, 0, image.shape[1], image.shape[0]), image)
    result = score_slide(slide, model)
    assert result.scale.source == "metadata" and result.scale.mpp == pytest.approx(model.mpp)
    assert result.reading["level"] == 0 and tuple(result.reading["field_level_px"]) == size[::-1]
    as_slide = by_box(result.fields.boxes, result.fields.probabilities, result.fields.codes())

    common = sorted(set(as_image) & set(as_slide))
    assert not analysis.fields.capped and len(common) >= 0.8 * max(len(as_image), len(as_slide)), (
        len(as_image), len(as_slide), len(common))
    codes = [as_image[box][1] for box in common]
    assert None in codes and len(set(codes)) >= 2, codes       # answered and refused fields both compared
    for box in common:
        (p_image, code_image), (p_slide, code_slide) = as_image[box], as_slide[box]
        assert code_image == code_slide, (box, code_image, code_slide)
        assert int(np.argmax(p_image)) == int(np.argmax(p_slide)), box
        np.testing.assert_allclose(p_image, p_slide, atol=1e-4, err_msg=str(box))
