"""Large images: cut into model-sized tiles at native resolution, skip background, classify the rest.

A model trained on tiles sees cells at one scale; shrinking a whole slide region into one
input would show it a different scale. So an image much larger than the input is cut into
input-sized tiles (no resizing), blank glass and black borders are skipped with the same
background rule the abstention colour check uses (``space/imageclf/ood.py``), and every tissue tile is
classified. A tile counts as tissue from the lowest tissue share the model's fitted colour
check accepts (some tissue is mostly air: benign lung tiles are often half empty), else from
``MIN_TISSUE``. The answer is a map and per-class tile counts, not one label.

Example:
    >>> analysis = classify_tiles(rgb, predictor, max_tiles=1024)
    >>> analysis.counts, analysis.abstained, analysis.capped
    ({'class_a': 120, 'class_b': 31}, 4, False)
    >>> sum(analysis.fractions.values()) + analysis.abstained_fraction
    1.0
    >>> tile_map = render_tile_map(rgb, analysis, num_classes=2)   # RGB uint8, class colours
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from imageclf import ood
from imageclf.errors import ModelError

MIN_TISSUE = 0.25         # share of tissue pixels a tile needs, unless the model's rule says otherwise
MAX_TILES = 1024         # default cap of classify_tiles; the Space passes analysis.MAX_FIELDS
CHUNK = 64                # tiles per forward pass
TILING_FACTOR = 2.0       # tile when the longer side exceeds this many tiles
MAX_MAP_SIDE = 1600       # the map is drawn at most this large (px)
# Okabe-Ito colours, distinguishable with the common colour-vision deficiencies. Ordered so the
# first three (orange, dark blue, yellow) differ in lightness too and stand out on purple H&E;
# sky blue and bluish green looked alike on tissue.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 159, 0), (0, 114, 178), (240, 228, 66), (204, 121, 167),
    (86, 180, 233), (213, 94, 0), (0, 158, 115),
)
ABSTAIN_COLOUR = (128, 128, 128)

__all__ = ["Tile", "TileAnalysis", "TilingError", "needs_tiling", "tile_grid", "tissue_mask",
           "tissue_threshold", "classify_tiles", "render_tile_map", "class_colour"]


class TilingError(ModelError, ValueError):
    """The image cannot be tiled (smaller than one tile); the message is for people."""

@dataclass
class Tile:
    """One tile: its grid cell, top-left pixel, tissue share and (once classified) its result."""

    row: int
    col: int
    y: int
    x: int
    tissue: float
    status: str = "background"        # "background" | "tissue" (not classified: cap) | "classified"
    class_index: int | None = None
    abstained: bool = False
    probabilities: list[float] | None = None
    abstain_reason: str | None = None


@dataclass
class TileAnalysis:
    """The tiles of one image and what the model said about them."""

    tile_size: tuple[int, int]
    grid: tuple[int, int]              # rows, cols
    tiles: list[Tile]
    class_ids: list[str]
    capped: bool = False
    max_tiles: int = MAX_TILES
    counts: dict[str, int] = field(default_factory=dict)  # tiles per predicted class (not abstained)
    abstained: int = 0

    @property
    def tissue_tiles(self) -> int:
        return sum(t.status != "background" for t in self.tiles)

    @property
    def classified(self) -> int:
        return sum(t.status == "classified" for t in self.tiles)

    @property
    def fractions(self) -> dict[str, float]:
        """Share of classified tiles per class; with ``abstained_fraction`` they sum to 1."""
        total = self.classified
        return {cid: (self.counts.get(cid, 0) / total if total else 0.0) for cid in self.class_ids}

    @property
    def abstained_fraction(self) -> float:
        return self.abstained / self.classified if self.classified else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no per-tile list)."""
        return {
            "tile_size": list(self.tile_size), "grid": list(self.grid), "tiles_total": len(self.tiles),
            "tissue_tiles": self.tissue_tiles, "classified_tiles": self.classified,
            "capped": self.capped, "max_tiles": self.max_tiles,
            "counts": {cid: self.counts.get(cid, 0) for cid in self.class_ids},
            "abstained": self.abstained, "fractions": self.fractions,
            "abstained_fraction": self.abstained_fraction,
        }


def needs_tiling(height: int, width: int, *, tile: tuple[int, int], factor: float = TILING_FACTOR) -> bool:
    """True when the image holds at least one whole tile and its longer side spans > ``factor`` tiles.

    Example:
        >>> needs_tiling(1500, 1500, tile=(224, 224)), needs_tiling(300, 300, tile=(224, 224))
        (True, False)
    """
    th, tw = tile
    return height >= th and width >= tw and max(height / th, width / tw) > factor


def tile_grid(height: int, width: int, *, tile: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """``(row, col, y, x)`` of the tiles covering the image, row-major, no resizing.

    The last row and column are aligned to the image edge (overlapping their neighbour) so
    every pixel is covered and no tile is padded.

    Example:
        >>> [(r, c, y, x) for r, c, y, x in tile_grid(500, 448, tile=(224, 224))][:3]
        [(0, 0, 0, 0), (0, 1, 0, 224), (1, 0, 224, 0)]

    Raises:
        TilingError: the image is smaller than one tile.
    """
    th, tw = tile
    if height < th or width < tw:
        raise TilingError(f"The image ({width} x {height} px) is smaller than one tile ({tw} x {th} px).")
    ys = _starts(height, th)
    xs = _starts(width, tw)
    return [(r, c, y, x) for r, y in enumerate(ys) for c, x in enumerate(xs)]


def tissue_mask(rgb: np.ndarray, rule: ood.AbstainRule | None = None) -> np.ndarray:
    """Boolean H x W mask of pixels that are not background (bright unsaturated glass, or black).

    Thresholds come from the model's fitted colour check when it has one, else the colour
    check's defaults, so "background" means the same here as in the abstention rule.
    """
    check = rule.colour if rule is not None and rule.colour is not None else None
    white = check.white_value if check else _default("white_value")
    black = check.black_value if check else _default("black_value")
    grey = check.grey_saturation if check else _default("grey_saturation")
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV)
    return ood.tissue_pixels(hsv, white_value=white, black_value=black, grey_saturation=grey)


def tissue_threshold(rule: ood.AbstainRule | None) -> float:
    """Least tissue share for a tile: the fitted colour check's lower bound, else ``MIN_TISSUE``.

    Example:
        >>> tissue_threshold(None)
        0.25
    """
    if rule is not None and rule.uses_colour and rule.colour is not None:
        low = rule.colour.bounds.get("tissue_fraction", (None, None))[0]
        if isinstance(low, (int, float)) and 0.0 < low < 1.0:
            return float(low)
    return MIN_TISSUE


def classify_tiles(
    rgb: np.ndarray,
    predictor: Any,
    *,
    min_tissue: float | None = None,
    max_tiles: int = MAX_TILES,
    chunk: int = CHUNK,
    classify: Callable[[Sequence[np.ndarray]], list[dict[str, Any]]] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> TileAnalysis:
    """Classify every tissue tile of an RGB uint8 image with ``predictor.predict_batch``.

    ``predictor`` needs ``input_size``, ``class_ids``, ``abstain_rule`` and ``predict_batch``
    (``space/predictor.Predictor``). ``min_tissue`` defaults to ``tissue_threshold(rule)``.
    With more tissue tiles than ``max_tiles`` an evenly spread subset is classified and
    ``capped`` is set. ``classify``: replaces ``predictor.predict_batch`` (same results).
    ``progress(done, total)`` is called per chunk.
    """
    classify = predictor.predict_batch if classify is None else classify
    size = tuple(predictor.input_size)
    rule = getattr(predictor, "abstain_rule", None)
    min_tissue = tissue_threshold(rule) if min_tissue is None else min_tissue
    mask = tissue_mask(rgb, rule)
    th, tw = size
    tiles = []
    for row, col, y, x in tile_grid(*rgb.shape[:2], tile=size):
        share = float(mask[y:y + th, x:x + tw].mean())
        tiles.append(Tile(row, col, y, x, share, "tissue" if share >= min_tissue else "background"))
    grid = (tiles[-1].row + 1, tiles[-1].col + 1)
    tissue = [t for t in tiles if t.status == "tissue"]
    picked = _spread(tissue, max_tiles)
    analysis = TileAnalysis(tile_size=size, grid=grid, tiles=tiles, class_ids=list(predictor.class_ids),
                            capped=len(picked) < len(tissue), max_tiles=max_tiles)
    for start in range(0, len(picked), chunk):
        batch = picked[start:start + chunk]
        results = classify([rgb[t.y:t.y + th, t.x:t.x + tw] for t in batch])
        for tile_, result in zip(batch, results, strict=True):
            tile_.status = "classified"
            tile_.class_index = analysis.class_ids.index(result["label"])
            tile_.abstained = bool(result["abstained"])
            tile_.abstain_reason = result["abstain_reason"]
            tile_.probabilities = [float(p) for p in result["probabilities"].values()]
            if tile_.abstained:
                analysis.abstained += 1
            else:
                analysis.counts[result["label"]] = analysis.counts.get(result["label"], 0) + 1
        if progress is not None:
            progress(min(start + chunk, len(picked)), len(picked))
    return analysis


def class_colour(index: int) -> tuple[int, int, int]:
    """RGB colour of class ``index`` on the tile map (colour-blind safe for up to 7 classes)."""
    if index < len(PALETTE):
        return PALETTE[index]
    hue = int((index * 0.618034 % 1.0) * 180)  # golden-ratio hues beyond the palette
    hsv = np.array([[[hue, 200, 230]]], np.uint8)
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def render_tile_map(rgb: np.ndarray, analysis: TileAnalysis, *, opacity: float = 0.45,
                    max_side: int = MAX_MAP_SIDE) -> np.ndarray:
    """The image with each classified tile tinted in its class colour (abstained: grey).

    Background tiles are left as they are; tissue tiles left out by the cap get an outline only.
    The map is drawn at most ``max_side`` px on its longer side.
    """
    scale = min(1.0, max_side / max(rgb.shape[:2]))
    base = rgb if scale == 1.0 else cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    layer = base.astype(np.float32).copy()
    alpha = np.zeros(base.shape[:2] + (1,), np.float32)
    th, tw = analysis.tile_size
    boxes = []
    for tile_ in analysis.tiles:
        y0, x0 = int(tile_.y * scale), int(tile_.x * scale)
        y1, x1 = int((tile_.y + th) * scale), int((tile_.x + tw) * scale)
        if tile_.status == "classified":
            colour = ABSTAIN_COLOUR if tile_.abstained else class_colour(int(tile_.class_index))
            layer[y0:y1, x0:x1] = colour
            alpha[y0:y1, x0:x1] = opacity
            boxes.append(((x0, y0), (x1 - 1, y1 - 1), colour))
        elif tile_.status == "tissue":
            boxes.append(((x0, y0), (x1 - 1, y1 - 1), (255, 255, 255)))
    out = (base.astype(np.float32) * (1.0 - alpha) + layer * alpha).round().astype(np.uint8)
    for top_left, bottom_right, colour in boxes:
        cv2.rectangle(out, top_left, bottom_right, colour, 1)
    return out


def _starts(length: int, step: int) -> list[int]:
    starts = list(range(0, length - step + 1, step))
    if starts[-1] + step < length:
        starts.append(length - step)
    return starts


def _spread(items: Sequence[Tile], limit: int) -> list[Tile]:
    """All items, or ``limit`` of them spread evenly over the sequence (row-major: over the image)."""
    if len(items) <= limit:
        return list(items)
    picks = np.unique(np.linspace(0, len(items) - 1, num=max(limit, 1)).round().astype(int))
    return [items[i] for i in picks]


def _default(name: str) -> int:
    return int(ood.ColourCheck.__dataclass_fields__[name].default)
