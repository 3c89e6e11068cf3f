"""``src/imageclf/core/fields.py``: the tile grid, background skipping, counts/fractions and the tile map."""
from __future__ import annotations

import numpy as np
import pytest

from imageclf.core import refusal as ood
from imageclf.core.fields import (
    ABSTAIN_COLOUR,
    MIN_TISSUE,
    TilingError,
    class_colour,
    classify_tiles,
    needs_tiling,
    render_tile_map,
    tile_grid,
    tissue_mask,
    tissue_threshold,
)

T = 16
WHITE, RED, GREEN, BLUE, DULL = (250, 250, 250), (200, 30, 30), (30, 200, 30), (30, 30, 200), (90, 70, 80)


class ColourPredictor:
    """Stand-in for ``Predictor``: the class is the dominant colour channel; dull tiles abstain."""

    input_size = (T, T)
    class_ids = ["red", "green", "blue"]
    names = ["Red", "Green", "Blue"]
    abstain_rule = None

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.seen: list[np.ndarray] = []

    def predict_batch(self, images):
        self.batches.append(len(images))
        results = []
        for image in images:
            assert image.shape == (T, T, 3) and image.dtype == np.uint8  # native tiles, no resizing
            self.seen.append(image.copy())
            means = image.reshape(-1, 3).mean(axis=0)
            top = int(np.argmax(means))
            probabilities = {cid: float(i == top) for i, cid in enumerate(self.class_ids)}
            results.append({"label": self.class_ids[top], "abstained": bool(means.max() < 120),
                            "abstain_reason": None, "probabilities": probabilities})
        return results


def _canvas(rows: int, cols: int) -> np.ndarray:
    return np.full((rows * T, cols * T, 3), WHITE, np.uint8)


def _paint(img: np.ndarray, row: int, col: int, colour, *, share: float = 1.0) -> None:
    """Colour the top ``share`` of one tile's rows."""
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


@pytest.mark.parametrize("shape, expected", [((1500, 1500), True), ((448, 448), False), ((449, 300), True),
                                             ((100, 1000), False), ((224, 224), False)])
def test_needs_tiling(shape, expected):
    assert needs_tiling(*shape, tile=(224, 224)) is expected


def test_tissue_mask_background_rule():
    img = np.array([[WHITE, (0, 0, 0), (215, 210, 205), (200, 120, 170), (80, 80, 80)]], np.uint8)
    # white glass, black border, pale unsaturated glass -> background; pink stain, mid grey -> tissue
    assert tissue_mask(img)[0].tolist() == [False, False, False, True, True]


def test_counts_fractions_background_and_abstention():
    img = _canvas(3, 4)
    _paint(img, 0, 0, RED)
    _paint(img, 0, 1, GREEN)
    _paint(img, 1, 2, BLUE)
    _paint(img, 2, 3, DULL)                 # tissue, but the model abstains on it
    _paint(img, 2, 0, RED, share=0.375)     # 6/16 rows of tissue: background at min_tissue=0.5
    _paint(img, 2, 1, GREEN, share=0.625)   # 10/16 rows: tissue
    predictor = ColourPredictor()
    progress: list[tuple[int, int]] = []
    analysis = classify_tiles(img, predictor, chunk=2, min_tissue=0.5,
                              progress=lambda done, total: progress.append((done, total)))
    assert analysis.grid == (3, 4) and len(analysis.tiles) == 12
    assert analysis.tissue_tiles == analysis.classified == 5 and not analysis.capped
    assert analysis.counts == {"red": 1, "green": 2, "blue": 1}
    assert analysis.abstained == 1
    assert analysis.fractions == pytest.approx({"red": 0.2, "green": 0.4, "blue": 0.2})
    assert sum(analysis.fractions.values()) + analysis.abstained_fraction == pytest.approx(1.0)
    assert predictor.batches == [2, 2, 1] and progress == [(2, 5), (4, 5), (5, 5)]
    status = {(t.row, t.col): t.status for t in analysis.tiles}
    assert status[(2, 0)] == "background" and status[(2, 1)] == "classified" and status[(0, 3)] == "background"
    summary = analysis.to_dict()
    assert summary["tiles_total"] == 12 and summary["classified_tiles"] == 5 and summary["abstained"] == 1


def test_tissue_threshold_comes_from_the_fitted_rule():
    """Tissue that is mostly air (benign lung) must not be dropped as background: use the fitted bound."""
    check = ood.ColourCheck(palette=("1",), bounds={"tissue_fraction": (0.09, None)})
    assert tissue_threshold(ood.AbstainRule(method="colour", colour=check)) == 0.09
    assert tissue_threshold(ood.AbstainRule(method="softmax", min_confidence=0.5)) == MIN_TISSUE
    assert tissue_threshold(None) == MIN_TISSUE
    img = _canvas(1, 2)
    _paint(img, 0, 0, RED, share=0.125)  # 2/16 rows of tissue
    predictor = ColourPredictor()
    assert classify_tiles(img, predictor).classified == 0  # default 0.25
    predictor.abstain_rule = ood.AbstainRule(method="colour", colour=check)
    assert classify_tiles(img, predictor).classified == 1  # fitted 0.09


def test_no_tissue_means_no_model_call():
    predictor = ColourPredictor()
    analysis = classify_tiles(_canvas(3, 3), predictor)
    assert analysis.classified == 0 and predictor.batches == []
    assert analysis.fractions == {"red": 0.0, "green": 0.0, "blue": 0.0} and analysis.abstained_fraction == 0.0


def test_cap_spreads_the_classified_tiles_over_the_image():
    img = np.full((10 * T, 10 * T, 3), RED, np.uint8)
    analysis = classify_tiles(img, ColourPredictor(), max_tiles=7)
    assert analysis.capped and analysis.classified == 7 and analysis.tissue_tiles == 100
    picked = [(t.row, t.col) for t in analysis.tiles if t.status == "classified"]
    assert picked[0] == (0, 0) and picked[-1] == (9, 9)  # first and last tile: spread, not the top rows
    assert len({row for row, _ in picked}) >= 6
    assert analysis.fractions["red"] == 1.0


def test_tile_map_colours():
    img = _canvas(2, 3)
    _paint(img, 0, 0, RED)
    _paint(img, 1, 2, DULL)
    analysis = classify_tiles(img, ColourPredictor())
    tile_map = render_tile_map(img, analysis, opacity=0.5)
    assert tile_map.shape == img.shape and tile_map.dtype == np.uint8
    centre = T // 2
    expected_red = (np.array(RED) + np.array(class_colour(0))) / 2
    assert np.abs(tile_map[centre, centre] - expected_red).max() <= 1
    expected_grey = (np.array(DULL) + np.array(ABSTAIN_COLOUR)) / 2
    assert np.abs(tile_map[T + centre, 2 * T + centre] - expected_grey).max() <= 1
    assert np.array_equal(tile_map[centre, T + centre], img[centre, T + centre])  # background untouched
    small = render_tile_map(np.repeat(np.repeat(img, 20, 0), 20, 1), classify_tiles(
        np.repeat(np.repeat(img, 20, 0), 20, 1), ColourPredictor()), max_side=300)
    assert max(small.shape[:2]) == 300


def test_class_colours_are_distinct():
    colours = [class_colour(i) for i in range(12)]
    assert len(set(colours)) == 12 and ABSTAIN_COLOUR not in colours
