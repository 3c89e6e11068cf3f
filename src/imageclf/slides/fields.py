"""A slide's fields: the grid at the model's scale, the tissue fields, read lazily and scored in batches.

The grid is the core's (``imageclf.core.fields.tile_grid``: input-sized fields, the last row and
column aligned to the edge) laid over the slide at the model's scale and mapped to level-0 pixels.
Fields whose tissue share (from the thumbnail mask) is below the refusal rule's ``min_tissue`` are
skipped. Each kept field is read from the chosen level (one region per field, so memory stays
bounded) and resampled to the model's input by ``imageclf.core.imaging.to_model_input``. While
the engine runs one batch, a thread reads the next one and another judges the previous one by
``imageclf.core.refusal.judge_fields``, on the exact pixels the model saw.

Example:
    >>> plan = plan_fields(reader, slide_mpp=0.25, model=model, level=0, tissue=tissue)
    >>> plan.grid, plan.field_level_px, len(plan.x)
    ((8, 11), (331, 331), 41)
    >>> table, timings = score_fields(reader, plan, model, progress=None, batch=64)
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from imageclf.core import refusal
from imageclf.core.fields import tile_grid
from imageclf.core.imaging import to_model_input
from imageclf.slides.reader import SlideError, SlideReader
from imageclf.slides.results import FieldTable, SlideModel
from imageclf.slides.tissue import TissueMap

Progress = Callable[[int, int], None]   # (fields done, fields to score)

__all__ = ["FieldPlan", "Progress", "check_size", "plan_fields", "read_field", "score_fields"]


@dataclass(frozen=True, eq=False)
class FieldPlan:
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


def plan_fields(reader: SlideReader, *, slide_mpp: float, model: SlideModel, level: int,
                tissue: TissueMap) -> FieldPlan:
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
    return FieldPlan(level=level, level_mpp=level_mpp, relative_size=model.mpp / level_mpp,
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


def score_fields(reader: SlideReader, plan: FieldPlan, model: SlideModel, *, progress: Progress | None,
                 batch: int) -> tuple[FieldTable, dict[str, float]]:
    """Every planned field through the engine and the field-level refusal rule, batch by batch."""
    total = len(plan.x)
    probabilities, judged, engine_s, wait_s = [], [], 0.0, 0.0
    started = time.perf_counter()
    if progress:
        progress(0, total)
    # The refusal rule judges batch N (on the pixels the model saw) while the engine runs batch N + 1.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="slide-judge") as judge:
        for done, pixels, waited in _prefetched(reader, plan, model.spec.input_size, batch):
            wait_s += waited
            tick = time.perf_counter()
            outputs = model.engine.run(pixels)
            engine_s += time.perf_counter() - tick
            judged.append(judge.submit(refusal.judge_fields, pixels, outputs.probabilities, outputs.feature_scores,
                                       model.spec.refusal))
            probabilities.append(outputs.probabilities)
            if progress:
                progress(done, total)
        reasons = [reason for future in judged for reason in future.result()]
    side_x, side_y = (round(s) for s in plan.field_level0_px)
    boxes = np.stack([plan.x, plan.y, np.full(total, side_x), np.full(total, side_y)], axis=1).astype(np.int64)
    classes = len(model.spec.class_ids)
    table = FieldTable(boxes.reshape(-1, 4), plan.tissue,
                       np.concatenate(probabilities) if probabilities else np.zeros((0, classes)), tuple(reasons))
    elapsed = time.perf_counter() - started
    return table, {"fields_s": elapsed, "engine_s": engine_s, "read_wait_s": wait_s,
                   "fields_per_s": total / elapsed if elapsed > 0 else 0.0}


def read_field(reader: SlideReader, plan: FieldPlan, x: int, y: int, size: tuple[int, int]) -> np.ndarray:
    """One field at the model's input size: read at the plan's level, resampled by the core's resizer."""
    width, height = plan.field_level_px
    return to_model_input(reader.read(int(x), int(y), plan.level, width, height), size=size)


def _prefetched(reader: SlideReader, plan: FieldPlan, size: tuple[int, int],
                batch: int) -> Iterator[tuple[int, np.ndarray, float]]:
    """(fields done, pixels, seconds waited) per batch; the next batch is read while this one is scored."""
    def read(start: int) -> np.ndarray:
        return np.stack([read_field(reader, plan, x, y, size)
                         for x, y in zip(plan.x[start:start + batch], plan.y[start:start + batch], strict=True)])

    starts = list(range(0, len(plan.x), batch))
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="slide-read") as pool:
        pending = pool.submit(read, starts[0]) if starts else None
        for index, start in enumerate(starts):
            tick = time.perf_counter()
            pixels = pending.result()
            waited = time.perf_counter() - tick
            pending = pool.submit(read, starts[index + 1]) if index + 1 < len(starts) else None
            yield min(start + batch, len(plan.x)), pixels, waited
