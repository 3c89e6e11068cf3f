"""``imageclf.core.fields`` and the rule's stages: the field grid, background skipping, the cap,
counts/fractions after :func:`rule.conclude`, and the field map (``imageclf.field_map``)."""
from __future__ import annotations

import numpy as np
import pytest

from imageclf.core import pipeline, rule
from imageclf.core.colour import ColourCheck, tissue_mask
from imageclf.core.engine import FieldEngine, FieldOutputs
from imageclf.field_map import ABSTAIN_COLOUR, class_colour, render_tile_map
from imageclf.core.fields import TilingError, cut_fields, tile_grid
from imageclf.core.refusal import MIN_TISSUE, AbstainRule, Reason, RefusalRule
from imageclf.core.request import Request
from imageclf.core.scale import ScaleRequest
from imageclf.core.spec import ClassifierSpec

T = 16
WHITE, RED, GREEN, BLUE, DULL = (250, 250, 250), (200, 30, 30), (30, 200, 30), (30, 30, 200), (90, 70, 80)
NATIVE = ScaleRequest("native")


class ColourEngine:
    """A field engine: the class is the dominant colour channel; dull fields get a flat, unsure answer."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def run(self, fields: np.ndarray) -> FieldOutputs:
        self.batches.append(len(fields))
        assert fields.shape[1:] == (T, T, 3) and fields.dtype == np.uint8  # native fields, no resizing
        means = fields.reshape(len(fields), -1, 3).mean(axis=1)
        probabilities = np.eye(3)[means.argmax(axis=1)]
        probabilities[means.max(axis=1) < 120] = 1 / 3
        return FieldOutputs(probabilities)


def _spec(*, min_tissue: float | None = None, max_fields: int = 64, colour: ColourCheck | None = None) -> ClassifierSpec:
    bounds = {} if min_tissue is None else {"tissue_fraction": (min_tissue, None)}
    check = colour or ColourCheck(palette=("1",), bounds=bounds)
    abstain = AbstainRule(method="colour+softmax", min_confidence=0.5, colour=check) if min_tissue or colour \
        else AbstainRule(method="softmax", min_confidence=0.5)
    return ClassifierSpec(class_ids=("red", "green", "blue"), names=("Red", "Green", "Blue"), input_size=(T, T),
                          refusal=RefusalRule(abstain=abstain), max_fields=max_fields)


def _analyze(img: np.ndarray, spec: ClassifierSpec, engine: FieldEngine, chunk: int = 64):
    return rule.analyze(Request(img, NATIVE), spec, engine, batch=chunk)


def _canvas(rows: int, cols: int) -> np.ndarray:
    return np.full((rows * T, cols * T, 3), WHITE, np.uint8)


def _paint(img: np.ndarray, row: int, col: int, colour, *, share: float = 1.0) -> None:
    """Colour the top ``share`` of one field's rows."""
    img[row * T:row * T + int(round(T * share)), col * T:(col + 1) * T] = colour


def test_grid_covers_every_pixel_without_resizing():
    grid = tile_grid(50, 40, tile=(T, T))
    assert [(r, c) for r, c, _, _ in grid][:4] == [(0, 0), (0, 1), (0, 2), (1, 0)]
    ys = sorted({y for _, _, y, _ in grid})
    xs = sorted({x for _, _, _, x in grid})
    assert ys == [0, 16, 32, 34] and xs == [0, 16, 24]  # last row/col aligned to the edge
    covered = np.zeros((50, 40), int)
    for _, _, y, x in grid:
        covered[y:y + T, x:x + T] += 1
    assert covered.min() == 1
    assert tile_grid(32, 32, tile=(T, T)) == [(0, 0, 0, 0), (0, 1, 0, 16), (1, 0, 16, 0), (1, 1, 16, 16)]
    with pytest.raises(TilingError, match="smaller than one tile"):
        tile_grid(15, 100, tile=(T, T))


def test_tissue_mask_background_rule():
    img = np.array([[WHITE, (0, 0, 0), (215, 210, 205), (200, 120, 170), (80, 80, 80)]], np.uint8)
    # white glass, black border, pale unsaturated glass -> background; pink stain, mid grey -> tissue
    assert tissue_mask(img)[0].tolist() == [False, False, False, True, True]


def test_counts_fractions_background_and_refusal_by_code():
    img = _canvas(3, 4)
    _paint(img, 0, 0, RED)
    _paint(img, 0, 1, GREEN)
    _paint(img, 1, 2, BLUE)
    _paint(img, 2, 3, DULL)                 # tissue, but too unsure: refused by the confidence floor
    _paint(img, 2, 0, RED, share=0.375)     # 6/16 rows of tissue: background at min_tissue=0.5
    _paint(img, 2, 1, GREEN, share=0.625)   # 10/16 rows: tissue
    spec = _spec(min_tissue=0.5)
    engine = ColourEngine()
    plan = rule.plan(Request(img, NATIVE), spec)
    assert len(plan.picked) == 5
    batches = []
    counted = lambda done, total: batches.append((done, total))  # noqa: E731
    analysis = rule.conclude(plan, pipeline.run(plan.fields, engine, spec, batch=2, progress=counted), spec)
    assert batches == [(0, 5), (2, 5), (4, 5), (5, 5)]
    fields = analysis.fields
    assert fields.grid == (3, 4) and len(fields.cells) == 12
    assert fields.tissue_tiles == fields.classified == 5 and not fields.capped
    assert fields.counts == {"red": 1, "green": 2, "blue": 1}
    assert fields.abstained == 1
    assert [t.reason for t in fields.cells if t.abstained] == [Reason.CONFIDENCE]
    assert fields.fractions == pytest.approx({"red": 0.2, "green": 0.4, "blue": 0.2})
    assert sum(fields.fractions.values()) + fields.abstained_fraction == pytest.approx(1.0)
    status = {(t.row, t.col): t.status for t in fields.cells}
    assert status[(2, 0)] == "background" and status[(2, 1)] == "classified" and status[(0, 3)] == "background"
    summary = fields.to_dict()
    assert summary["tiles_total"] == 12 and summary["classified_tiles"] == 5 and summary["abstained"] == 1
    assert not analysis.abstained and analysis.label == "green"


def test_the_engine_must_answer_every_field():
    img = _canvas(3, 3)
    _paint(img, 0, 0, RED)
    _paint(img, 1, 1, RED)
    spec = _spec()
    plan = rule.plan(Request(img, NATIVE), spec)

    class DropsOne:
        def run(self, fields: np.ndarray) -> FieldOutputs:
            return FieldOutputs(np.eye(3)[:len(fields) - 1])

    with pytest.raises(ValueError, match="answered 1 fields; 2 were asked"):
        pipeline.run(plan.fields, DropsOne(), spec)


def test_least_tissue_share_comes_from_the_fitted_rule():
    """Tissue that is mostly air (benign lung) must not be dropped as background: use the fitted bound."""
    check = ColourCheck(palette=("1",), bounds={"tissue_fraction": (0.09, None)})
    assert RefusalRule(abstain=AbstainRule(method="colour", colour=check)).min_tissue == 0.09
    assert RefusalRule(abstain=AbstainRule(method="softmax", min_confidence=0.5)).min_tissue == MIN_TISSUE
    assert RefusalRule().min_tissue == MIN_TISSUE
    img = _canvas(1, 3)
    _paint(img, 0, 0, RED, share=0.125)  # 2/16 rows of tissue
    for min_tissue, expected in ((MIN_TISSUE, 0), (0.09, 1)):
        fields, picked = cut_fields(img, size=(T, T), class_ids=("r",), background=None, min_tissue=min_tissue,
                                    max_fields=64)
        assert len(picked) == expected


def test_no_tissue_means_no_model_call():
    engine = ColourEngine()
    analysis = _analyze(_canvas(3, 3), _spec(), engine)
    assert analysis.fields.classified == 0 and engine.batches == []
    assert analysis.abstain_code == Reason.NO_TISSUE.value
    assert analysis.fields.fractions == {"red": 0.0, "green": 0.0, "blue": 0.0}
    assert analysis.fields.abstained_fraction == 0.0


def test_cap_spreads_the_classified_fields_over_the_image():
    img = np.full((10 * T, 10 * T, 3), RED, np.uint8)
    fields = _analyze(img, _spec(max_fields=7), ColourEngine()).fields
    assert fields.capped and fields.classified == 7 and fields.tissue_tiles == 100
    picked = [(t.row, t.col) for t in fields.cells if t.status == "classified"]
    assert picked[0] == (0, 0) and picked[-1] == (9, 9)  # first and last field: spread, not the top rows
    assert len({row for row, _ in picked}) >= 6
    assert fields.fractions["red"] == 1.0


def test_tile_map_colours():
    img = _canvas(2, 3)
    _paint(img, 0, 0, RED)
    _paint(img, 1, 2, DULL)
    analysis = _analyze(img, _spec(), ColourEngine())
    tile_map = render_tile_map(img, analysis.fields, opacity=0.5)
    assert tile_map.shape == img.shape and tile_map.dtype == np.uint8
    centre = T // 2
    expected_red = (np.array(RED) + np.array(class_colour(0))) / 2
    assert np.abs(tile_map[centre, centre] - expected_red).max() <= 1
    expected_grey = (np.array(DULL) + np.array(ABSTAIN_COLOUR)) / 2
    assert np.abs(tile_map[T + centre, 2 * T + centre] - expected_grey).max() <= 1
    assert np.array_equal(tile_map[centre, T + centre], img[centre, T + centre])  # background untouched
    grey = render_tile_map(img, analysis.fields, opacity=0.5, grey=True)   # an image without an answer
    assert np.abs(grey[centre, centre] - (np.array(RED) + np.array(ABSTAIN_COLOUR)) / 2).max() <= 1
    big = np.repeat(np.repeat(img, 20, 0), 20, 1)
    small = render_tile_map(big, _analyze(big, _spec(), ColourEngine()).fields, max_side=300)
    assert max(small.shape[:2]) == 300


def test_class_colours_are_distinct():
    colours = [class_colour(i) for i in range(12)]
    assert len(set(colours)) == 12 and ABSTAIN_COLOUR not in colours
