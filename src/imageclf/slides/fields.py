"""A slide's fields: the grid at the model's scale, the tissue fields, and their pixels read lazily.

The grid is the core's (``imageclf.core.fields.tile_grid``: input-sized fields, the last row and
column aligned to the edge) laid over the slide at the model's scale and mapped to level-0 pixels.
Fields whose tissue share (from the thumbnail mask) is below the refusal rule's ``min_tissue`` are
skipped. :class:`SlideFields` is the field source the one field loop (``imageclf.core.pipeline.run``)
reads: each field read from the chosen level (one region per field, so memory stays bounded) and
resampled to the model's input by ``imageclf.core.imaging.to_model_input``.

Example:
    >>> grid = plan_grid(reader, slide_mpp=0.25, model=model, level=0, tissue=tissue)
    >>> grid.grid, grid.field_level_px, len(grid.x)
    ((8, 11), (331, 331), 41)
    >>> SlideFields(reader, grid, (224, 224)).read(0, 8).shape
    (8, 224, 224, 3)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from imageclf.core.fields import tile_grid
from imageclf.core.imaging import to_model_input
from imageclf.slides.reader import SlideError, SlideReader
from imageclf.slides.slide_model import SlideModel
from imageclf.slides.tissue import TissueMap

__all__ = ["SlideFields", "SlideGrid", "check_size", "plan_grid"]


@dataclass(frozen=True, eq=False)
class SlideGrid:
    """Where the fields are: the level read, the field sides, the grid, and the tissue fields'
    level-0 top-left corners (``x``, ``y``) with their tissue shares."""

    level: int
    level_mpp: float
    relative_size: float                   # level pixels per model pixel (> 1: fields are shrunk)
    field_level0_px: tuple[float, float]   # width, height of one field in level-0 pixels
    field_level_px: tuple[int, int]        # ... in pixels of the level read
    grid: tuple[int, int]                  # rows, columns
    x: np.ndarray
    y: np.ndarray
    tissue: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "level_um_per_px": round(self.level_mpp, 5),
                "relative_size": round(self.relative_size, 4),
                "field_level0_px": [round(v, 3) for v in self.field_level0_px],
                "field_level_px": list(self.field_level_px), "grid": list(self.grid),
                "grid_fields": self.grid[0] * self.grid[1], "tissue_fields": int(len(self.x))}


def plan_grid(reader: SlideReader, *, slide_mpp: float, model: SlideModel, level: int,
              tissue: TissueMap) -> SlideGrid:
    """The field grid over the slide at the model's scale, and the fields with enough tissue.

    Raises:
        SlideError: the slide is smaller than one field.
    """
    (height_in, width_in), (width, height) = model.spec.input_size, reader.dimensions
    check_size(reader, slide_mpp, model)
    ratio = model.mpp / slide_mpp                       # level-0 pixels per model pixel
    model_w, model_h = int(width / ratio), int(height / ratio)
    size = (height_in, width_in)
    xs = np.array([x for _, _, _, x in tile_grid(height_in, model_w, tile=size)], np.float64) * ratio
    ys = np.array([y for _, _, y, _ in tile_grid(model_h, width_in, tile=size)], np.float64) * ratio
    grid_x, grid_y = (a.ravel() for a in np.meshgrid(xs, ys))
    side_x, side_y = width_in * ratio, height_in * ratio
    shares = tissue.shares(grid_x, grid_y, side_x, side_y)
    keep = shares >= model.spec.refusal.min_tissue
    downsample = reader.level_downsamples[level]
    level_mpp = slide_mpp * downsample
    # Corners on the read level's pixel grid: OpenSlide would otherwise shift a region by a fraction of
    # a pixel there, blurring it.
    snap = lambda values: np.round(np.round(values / downsample) * downsample).astype(np.int64)  # noqa: E731
    return SlideGrid(level=level, level_mpp=level_mpp, relative_size=model.mpp / level_mpp,
                     field_level0_px=(side_x, side_y),
                     field_level_px=(max(1, round(side_x / downsample)), max(1, round(side_y / downsample))),
                     grid=(len(ys), len(xs)), x=snap(grid_x[keep]), y=snap(grid_y[keep]), tissue=shares[keep])


def check_size(reader: SlideReader, slide_mpp: float, model: SlideModel) -> None:
    """Raise :class:`SlideError` when the slide is smaller than one field at the model's scale."""
    (height_in, width_in), (width, height) = model.spec.input_size, reader.dimensions
    ratio = model.mpp / slide_mpp
    if int(width / ratio) < width_in or int(height / ratio) < height_in:
        raise SlideError(f"{reader.path.name} is {width} x {height} px ({width * slide_mpp / 1000:.3f} x "
                         f"{height * slide_mpp / 1000:.3f} mm), smaller than one field of the model "
                         f"({width_in} px at {model.mpp:.3g} um/px = {width_in * model.mpp / 1000:.3f} mm).")


@dataclass(frozen=True, eq=False)
class SlideFields:
    """The tissue fields of one slide as a field source: pixels read from the pyramid when asked for."""

    reader: SlideReader
    grid: SlideGrid
    size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.grid.x)

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.read_rows(range(start, stop))

    def read_rows(self, rows: Any) -> np.ndarray:
        """Fields at the given row numbers, each at the model's input size (read at the grid's level)."""
        width, height = self.grid.field_level_px
        return np.stack([to_model_input(self.reader.read(int(self.grid.x[i]), int(self.grid.y[i]), self.grid.level,
                                                         width, height), size=self.size) for i in rows])

    def boxes(self) -> np.ndarray:
        """Level-0 boxes (N x 4: x, y, width, height) of the fields."""
        side_x, side_y = (round(s) for s in self.grid.field_level0_px)
        n = len(self)
        return np.stack([self.grid.x, self.grid.y, np.full(n, side_x), np.full(n, side_y)], axis=1).astype(np.int64)
