"""Fields: model-sized pieces of an image at the model's scale; background skipped, the rest kept.

A model trained on tiles sees cells at one scale; shrinking a large image into one input would
show it a different scale. So an image much larger than the input (after resampling to the
model's scale) is cut into input-sized fields (no resizing), blank glass and black borders are
skipped with the background rule of the colour check (``imageclf.core.colour``), and at most
``max_fields`` tissue fields, spread evenly over the image, are kept for the model. A field
counts as tissue from the refusal rule's least tissue share (``RefusalRule.min_tissue``).

Example:
    >>> fields, picked = cut_fields(view, size=(224, 224), background=check, min_tissue=0.25, max_fields=64)
    >>> fields.grid, len(picked), fields.capped
    ((4, 6), 17, False)
    >>> batch = field_pixels(view, fields, picked)                  # 17 x 224 x 224 x 3 uint8
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from imageclf.core.colour import ColourCheck, tissue_mask
from imageclf.core.refusal import Reason
from imageclf.errors import ModelError

TILING_FACTOR = 2.0       # after resampling, up to this many inputs wide is still one field

__all__ = ["FieldCell", "FieldGrid", "TilingError", "cut_fields", "field_pixels", "tile_grid", "TILING_FACTOR"]


class TilingError(ModelError, ValueError):
    """The image cannot be tiled (smaller than one tile); the message is for people."""


@dataclass(frozen=True)
class FieldCell:
    """One field: its grid cell, top-left pixel, tissue share and (once classified) its result."""

    row: int
    col: int
    y: int
    x: int
    tissue: float
    status: str = "background"        # "background" | "tissue" (not classified: cap) | "classified"
    class_index: int | None = None
    probabilities: tuple[float, ...] | None = None
    reason: Reason | None = None      # why this classified field was refused (None: answered)

    @property
    def abstained(self) -> bool:
        return self.reason is not None

    @property
    def abstain_reason(self) -> str | None:
        return None if self.reason is None else self.reason.sentence()


@dataclass(frozen=True)
class FieldGrid:
    """The fields of one image and what the model said about them."""

    tile_size: tuple[int, int]
    grid: tuple[int, int]              # rows, cols
    cells: tuple[FieldCell, ...]
    class_ids: tuple[str, ...]
    capped: bool = False
    max_fields: int = 64

    @property
    def tissue_tiles(self) -> int:
        return sum(t.status != "background" for t in self.cells)

    @property
    def classified(self) -> int:
        return sum(t.status == "classified" for t in self.cells)

    @property
    def abstained(self) -> int:
        return sum(t.status == "classified" and t.abstained for t in self.cells)

    @property
    def counts(self) -> dict[str, int]:
        """Answered fields per predicted class id."""
        counts = {cid: 0 for cid in self.class_ids}
        for t in self.cells:
            if t.status == "classified" and not t.abstained:
                counts[self.class_ids[t.class_index]] += 1
        return counts

    @property
    def fractions(self) -> dict[str, float]:
        """Share of classified fields per class; with ``abstained_fraction`` they sum to 1."""
        total = self.classified
        return {cid: (n / total if total else 0.0) for cid, n in self.counts.items()}

    @property
    def abstained_fraction(self) -> float:
        return self.abstained / self.classified if self.classified else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no per-field list)."""
        return {
            "tile_size": list(self.tile_size), "grid": list(self.grid), "tiles_total": len(self.cells),
            "tissue_tiles": self.tissue_tiles, "classified_tiles": self.classified,
            "capped": self.capped, "max_tiles": self.max_fields, "counts": self.counts,
            "abstained": self.abstained, "fractions": self.fractions,
            "abstained_fraction": self.abstained_fraction,
        }


def tile_grid(height: int, width: int, *, tile: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """``(row, col, y, x)`` of the fields covering the image, row-major, no resizing.

    The last row and column are aligned to the image edge (overlapping their neighbour) so
    every pixel is covered and no field is padded.

    Example:
        >>> [(r, c, y, x) for r, c, y, x in tile_grid(500, 448, tile=(224, 224))][:3]
        [(0, 0, 0, 0), (0, 1, 0, 224), (1, 0, 224, 0)]

    Raises:
        TilingError: the image is smaller than one field.
    """
    th, tw = tile
    if height < th or width < tw:
        raise TilingError(f"The image ({width} x {height} px) is smaller than one tile ({tw} x {th} px).")
    ys = _starts(height, th)
    xs = _starts(width, tw)
    return [(r, c, y, x) for r, y in enumerate(ys) for c, x in enumerate(xs)]


def cut_fields(view: np.ndarray, *, size: tuple[int, int], class_ids: Sequence[str],
               background: ColourCheck | None, min_tissue: float, max_fields: int) -> tuple[FieldGrid, list[int]]:
    """The fields of ``view`` (RGB uint8 at the model's scale) and the indices of those to classify.

    ``background``: the colour check whose thresholds define blank glass and black (its
    defaults when ``None``). With more tissue fields than ``max_fields`` an evenly spread subset
    is kept and ``capped`` is set.
    """
    mask = tissue_mask(view, background)
    th, tw = size
    tiles = []
    for row, col, y, x in tile_grid(*view.shape[:2], tile=size):
        share = float(mask[y:y + th, x:x + tw].mean())
        tiles.append(FieldCell(row, col, y, x, share, "tissue" if share >= min_tissue else "background"))
    tissue = [i for i, t in enumerate(tiles) if t.status == "tissue"]
    picked = _spread(tissue, max_fields)
    fields = FieldGrid(tile_size=tuple(size), grid=(tiles[-1].row + 1, tiles[-1].col + 1), cells=tuple(tiles),
                          class_ids=tuple(class_ids), capped=len(picked) < len(tissue), max_fields=max_fields)
    return fields, picked


def field_pixels(view: np.ndarray, fields: FieldGrid, picked: Sequence[int]) -> np.ndarray:
    """The picked fields' pixels as one contiguous N x H x W x 3 uint8 batch."""
    th, tw = fields.tile_size
    if not picked:
        return np.zeros((0, th, tw, 3), np.uint8)
    return np.stack([view[t.y:t.y + th, t.x:t.x + tw] for t in (fields.cells[i] for i in picked)])


def _starts(length: int, step: int) -> list[int]:
    starts = list(range(0, length - step + 1, step))
    if starts[-1] + step < length:
        starts.append(length - step)
    return starts


def _spread(items: Sequence[int], limit: int) -> list[int]:
    """All items, or ``limit`` of them spread evenly over the sequence (row-major: over the image)."""
    if len(items) <= limit:
        return list(items)
    picks = np.unique(np.linspace(0, len(items) - 1, num=max(limit, 1)).round().astype(int))
    return [items[i] for i in picks]
