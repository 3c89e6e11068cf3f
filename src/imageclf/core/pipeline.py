"""The one field loop every caller runs: a plan of fields in, one field table out, one verdict from it.

An image plans its fields from memory (``imageclf.core.rule.plan``), a slide from lazy reads of its
pyramid (``imageclf.slides.scoring``), a list of tiles as one field each
(``imageclf.model.predictor.Predictor.classify_fields``); all three hand a :class:`FieldPlan` to the
same two functions:

1. :func:`run` (plan -> :class:`~imageclf.core.field_table.FieldTable`): fields read batch by batch
   (the next batch read while the engine runs this one), mapped to the model's reference stains
   (``imageclf.core.stain``), run through a ``FieldEngine``, and each batch judged by
   ``refusal.judge_fields`` as it comes back (on the pixels as sent: the colour check judges what the
   user sent, the model sees them normalised). Nothing calls back into the caller but ``progress``.
2. :func:`merge` (field table -> :class:`~imageclf.core.verdict.Verdict`): the mean of the answered
   fields and ``refusal.judge_image`` (no tissue, too many refused, fields that disagree).

Example:
    >>> plan = FieldPlan(ArrayFields(pixels), boxes, tissue, stain=estimate)
    >>> table = run(plan, engine, spec, progress=lambda done, total: None)
    >>> merge(table, spec, one_field=False).label
    'lung_aca'
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from imageclf.core import refusal, stain
from imageclf.core.engine import FieldEngine, FieldOutputs
from imageclf.core.field_table import FieldTable
from imageclf.core.spec import ClassifierSpec
from imageclf.core.verdict import Verdict

# Fields per forward pass. The engine alone is a little faster at 32 (scripts/perf/batch_sizes.py),
# but a whole slide is faster end to end at 64: reading the next fields overlaps a longer pass
# (41.3 against 38.1 fields/s, scripts/perf/slide_bench.py; docs/operations.md).
CHUNK = 64

Progress = Callable[[int, int], None]   # (fields done, fields to score)

__all__ = ["CHUNK", "ArrayFields", "FieldPlan", "FieldSource", "Progress", "merge", "run"]


class FieldSource(Protocol):
    """Where a plan's field pixels come from: ``read(start, stop)`` gives fields start..stop-1 as
    N x H x W x 3 RGB uint8 at the model's input size (from memory, or read lazily from a slide)."""

    def __len__(self) -> int: ...

    def read(self, start: int, stop: int) -> np.ndarray: ...


@dataclass(frozen=True, eq=False)
class ArrayFields:
    """Fields already in memory (an image's cuts, or tiles sent one field each)."""

    pixels: np.ndarray

    def __len__(self) -> int:
        return len(self.pixels)

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.pixels[start:stop]


@dataclass(frozen=True, eq=False)
class FieldPlan:
    """The fields to run: their source, boxes (N x 4: x, y, width, height, in the caller's pixels),
    tissue shares, and how they are brought to the reference stains: with ``stain``, one estimate for
    them all (an image's or a slide's), or with ``stain_each`` each field from itself (tiles sent one
    field each, each its own image). Neither: the fields keep their colours."""

    source: FieldSource
    boxes: np.ndarray
    tissue: np.ndarray
    stain: stain.StainEstimate | None = None
    stain_each: bool = False
    timings: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.source)


def run(plan: FieldPlan, engine: FieldEngine, spec: ClassifierSpec, *, batch: int = CHUNK,
        progress: Progress | None = None) -> FieldTable:
    """Every field of ``plan`` through the stain step, the engine and the field-level refusal rule.

    The next batch is read in a thread while the engine runs this one, and the previous batch is
    judged in another (OpenSlide and numpy release the GIL); ``table.timings`` says where time went.
    """
    total, started = len(plan), time.perf_counter()
    probabilities: list[np.ndarray] = []
    scores: list[np.ndarray | None] = []
    judged: list[Future] = []
    engine_s = wait_s = stain_s = 0.0
    if progress:
        progress(0, total)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="field-judge") as judge:
        for start, pixels, waited in _read_ahead(plan.source, batch):
            wait_s += waited
            tick = time.perf_counter()
            model_input = _normalised(plan, pixels, spec)
            stain_s += time.perf_counter() - tick
            tick = time.perf_counter()
            outputs: FieldOutputs = engine.run(model_input)
            engine_s += time.perf_counter() - tick
            if len(outputs) != len(pixels):   # an engine that drops fields would shift every answer after it
                raise ValueError(f"The engine answered {len(outputs)} fields; {len(pixels)} were asked.")
            judged.append(judge.submit(refusal.judge_fields, pixels, outputs.probabilities, outputs.feature_scores,
                                       spec.refusal, outputs.gate_scores))
            probabilities.append(outputs.probabilities)
            scores.append(outputs.feature_scores)
            if progress:
                progress(start + len(pixels), total)
        reasons = tuple(reason for future in judged for reason in future.result())
    elapsed = time.perf_counter() - started
    timings = {**plan.timings, "fields_s": elapsed, "engine_s": engine_s, "read_wait_s": wait_s, "stain_s": stain_s,
               "fields_per_s": total / elapsed if elapsed > 0 else 0.0}
    classes = len(spec.class_ids)
    feature_scores = None if not scores or any(s is None for s in scores) else np.concatenate(scores)
    return FieldTable(np.asarray(plan.boxes, np.int64).reshape(-1, 4), np.asarray(plan.tissue, np.float64),
                      np.concatenate(probabilities) if probabilities else np.zeros((0, classes)), reasons,
                      feature_scores=feature_scores, timings=timings)


def merge(table: FieldTable, spec: ClassifierSpec, *, one_field: bool) -> Verdict:
    """The verdict of one image or slide from its field table: the mean of the answered fields, judged.

    A one-field image that is refused keeps its field's numbers (not shown); an image whose fields
    disagree keeps the mean (not shown); any other refusal names no probabilities.
    """
    answered = table.probabilities[table.answered]
    mean = np.mean(answered, axis=0) if len(answered) else None
    verdict = refusal.judge_image(list(table.reasons), mean, one_field=one_field, rule=spec.refusal)
    if one_field and verdict is not None and len(table):
        mean = np.asarray(table.probabilities[0], np.float64)
    elif verdict is not None and verdict.reason is not refusal.Reason.FIELDS_DISAGREE:
        mean = None
    return Verdict(tuple(spec.class_ids), tuple(spec.names), mean, verdict)


def _normalised(plan: FieldPlan, pixels: np.ndarray, spec: ClassifierSpec) -> np.ndarray:
    """The batch as the model takes it: mapped to the reference stains when the model has a stain block."""
    if spec.stain is None:
        return pixels
    if plan.stain_each:
        return stain.normalise_each(pixels, spec.stain)[0]
    return pixels if plan.stain is None else stain.normalise(pixels, plan.stain, spec.stain)


def _read_ahead(source: FieldSource, batch: int) -> Iterator[tuple[int, np.ndarray, float]]:
    """(first field, pixels, seconds waited) per batch; the next batch is read while this one is scored."""
    starts = list(range(0, len(source), batch))
    if not starts:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="field-read") as pool:
        pending = pool.submit(source.read, starts[0], min(starts[0] + batch, len(source)))
        for index, start in enumerate(starts):
            tick = time.perf_counter()
            pixels = pending.result()
            waited = time.perf_counter() - tick
            if index + 1 < len(starts):
                nxt = starts[index + 1]
                pending = pool.submit(source.read, nxt, min(nxt + batch, len(source)))
            yield start, pixels, waited
