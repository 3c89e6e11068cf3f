"""The one field loop every caller runs: a plan of fields in, one field table out, one verdict from it.

An image plans its fields from memory (``imageclf.core.rule.plan``), a slide from lazy reads of its
pyramid (``imageclf.slides.scoring``), a list of tiles as one field each
(``imageclf.model.predictor.Predictor.classify_fields``); all three hand a :class:`FieldPlan` to the
same two functions:

1. :func:`run` (plan -> :class:`~imageclf.core.field_table.FieldTable`): fields read batch by batch,
   mapped to the model's reference stains (``imageclf.core.stain``) and colour-checked, run through a
   ``FieldEngine``, and each batch judged by ``refusal.judge_fields`` as it comes back (on the pixels
   as sent: the colour check judges what the user sent, the model sees them normalised). All that
   needs only a batch's pixels is done by ``READERS`` threads ahead of the engine, so it overlaps the
   forward pass (OpenSlide, Pillow, OpenCV and numpy release the GIL). Nothing calls back into the
   caller but ``progress``.
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
from collections import deque
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
# Batches prepared at once ahead of the engine (read, stains mapped, colour-checked); the first batch,
# which has no pass to hide behind, in READERS parts at once. Two: reads slower than a pass (JPEG scans,
# slow disks; OpenSlide releases the GIL) still keep ahead. On the generated zlib slide one reader
# already kept ahead (scripts/perf/slide_bench.py: 0.82 vs 0.83x with one or two, CPU-bound on 2
# cores), and each prepared batch waiting holds CHUNK fields in memory.
READERS = 2
# Threads that run a forward pass started before its plan is made (:func:`early_pass`): as many as the
# Space runs /predict requests at once (space/app.py), each thread mostly waiting for the engine.
EARLY_PASSES = 16

Progress = Callable[[int, int], None]   # (fields done, fields to score)

__all__ = ["CHUNK", "READERS", "ArrayFields", "FieldPlan", "FieldSource", "Progress", "early_pass", "merge", "run"]


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


@dataclass(frozen=True, eq=False)
class _Prepared:
    """One batch as the engine and the judgement take it, made ahead of the forward pass."""

    start: int
    pixels: np.ndarray                 # as sent: what the colour check judges
    model_input: np.ndarray            # mapped to the reference stains when the model has a stain block
    colour_failed: list[bool]
    stain_s: float


def run(plan: FieldPlan, engine: FieldEngine, spec: ClassifierSpec, *, batch: int = CHUNK,
        progress: Progress | None = None, readers: int = READERS) -> FieldTable:
    """Every field of ``plan`` through the stain step, the engine and the field-level refusal rule.

    ``readers`` threads prepare the next batches (:func:`_prepare`: read, stains, colour check) while
    the engine runs this one; what is left of the judgement (feature check, gate, confidence: a few
    numbers per field) follows each pass here. A plan of one batch (an upload, a tile) runs in the
    calling thread: it has nothing to overlap, and starting threads would only add to its latency.
    ``table.timings`` says where time went (``read_wait_s``: the engine waiting for a batch).
    """
    total, started = len(plan), time.perf_counter()
    probabilities: list[np.ndarray] = []
    scores: list[np.ndarray | None] = []
    reasons: list[refusal.Reason | None] = []
    engine_s = wait_s = stain_s = 0.0
    if progress:
        progress(0, total)
    for ready, waited in _ahead(plan, spec, batch, readers):
        wait_s, stain_s = wait_s + waited, stain_s + ready.stain_s
        tick = time.perf_counter()
        outputs: FieldOutputs = engine.run(ready.model_input)
        engine_s += time.perf_counter() - tick
        if len(outputs) != len(ready.pixels):   # an engine that drops fields would shift every answer after it
            raise ValueError(f"The engine answered {len(outputs)} fields; {len(ready.pixels)} were asked.")
        reasons += refusal.judge_fields(ready.pixels, outputs.probabilities, outputs.feature_scores, spec.refusal,
                                        outputs.gate_scores, colour_failed=ready.colour_failed)
        probabilities.append(outputs.probabilities)
        scores.append(outputs.feature_scores)
        if progress:
            progress(ready.start + len(ready.pixels), total)
    elapsed = time.perf_counter() - started
    timings = {**plan.timings, "fields_s": elapsed, "engine_s": engine_s, "read_wait_s": wait_s, "stain_s": stain_s,
               "fields_per_s": total / elapsed if elapsed > 0 else 0.0}
    classes = len(spec.class_ids)
    feature_scores = None if not scores or any(s is None for s in scores) else np.concatenate(scores)
    return FieldTable(np.asarray(plan.boxes, np.int64).reshape(-1, 4), np.asarray(plan.tissue, np.float64),
                      np.concatenate(probabilities) if probabilities else np.zeros((0, classes)), tuple(reasons),
                      feature_scores=feature_scores, timings=timings)


def early_pass(engine: FieldEngine, fields: np.ndarray) -> FieldEngine:
    """``engine`` with a forward pass on ``fields`` started now, in a thread: run on exactly these pixels,
    it gives that pass's outputs; on anything else it runs as usual (the early pass wasted).

    For fields known before their plan is made (``imageclf.core.rule.analyze``: a tile-sized upload is
    most likely its own one field, whatever its scale turns out to be), so the forward pass overlaps
    the scale estimate and the rest of the plan instead of following them.
    """
    return _EarlyPass(engine, fields, _EARLY.submit(engine.run, fields))


class _EarlyPass:
    """A field engine whose first run on the pixels it was started with takes the early pass's outputs."""

    def __init__(self, engine: FieldEngine, fields: np.ndarray, pending: Future) -> None:
        self._engine, self._fields, self._pending = engine, fields, pending

    def run(self, fields: np.ndarray) -> FieldOutputs:
        pending, self._pending = self._pending, None   # its outputs answer one run, no more
        if pending is None or fields.shape != self._fields.shape or not np.array_equal(fields, self._fields):
            return self._engine.run(fields)
        if pending.cancel():   # never started (every early thread busy): waiting for it would only add
            return self._engine.run(fields)
        return pending.result()


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


def _prepare(plan: FieldPlan, spec: ClassifierSpec, start: int, stop: int) -> _Prepared:
    """Everything about fields start..stop-1 that needs only their pixels: read, stains mapped, colour-checked."""
    pixels = plan.source.read(start, stop)
    tick = time.perf_counter()
    model_input = _normalised(plan, pixels, spec)
    stain_s = time.perf_counter() - tick
    abstain = spec.refusal.abstain
    return _Prepared(start, pixels, model_input, [not refusal.colour_ok(rgb, abstain) for rgb in pixels], stain_s)


def _normalised(plan: FieldPlan, pixels: np.ndarray, spec: ClassifierSpec) -> np.ndarray:
    """The batch as the model takes it: mapped to the reference stains when the model has a stain block."""
    if spec.stain is None:
        return pixels
    if plan.stain_each:
        return stain.normalise_each(pixels, spec.stain)[0]
    return pixels if plan.stain is None else stain.normalise(pixels, plan.stain, spec.stain)


_EARLY = ThreadPoolExecutor(max_workers=EARLY_PASSES, thread_name_prefix="early-pass")


def _ahead(plan: FieldPlan, spec: ClassifierSpec, batch: int, readers: int) -> Iterator[tuple[_Prepared, float]]:
    """(prepared batch, seconds the engine waited for it), in order; up to ``readers`` batches are prepared
    at once ahead of the one the engine runs (none for a plan of one batch: it is prepared here)."""
    bounds = [(start, min(start + batch, len(plan))) for start in range(0, len(plan), batch)]
    if len(bounds) <= 1 or readers < 1:
        for start, stop in bounds:
            yield _prepare(plan, spec, start, stop), 0.0
        return
    pool = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="field-read")
    try:
        # The first batch has no forward pass to hide behind: its parts are prepared at once, one per reader.
        step = -(-bounds[0][1] // readers)
        first = [pool.submit(_prepare, plan, spec, start, min(start + step, bounds[0][1]))
                 for start in range(0, bounds[0][1], step)]
        pending: deque[list[Future]] = deque([first, *([pool.submit(_prepare, plan, spec, *b)] for b in bounds[1:readers])])
        for index in range(len(bounds)):
            tick = time.perf_counter()
            ready = _joined([part.result() for part in pending.popleft()])
            waited = time.perf_counter() - tick
            if index + readers < len(bounds):
                pending.append([pool.submit(_prepare, plan, spec, *bounds[index + readers])])
            yield ready, waited
    finally:   # an error (or a caller that stops early) leaves no reads running behind it
        pool.shutdown(wait=True, cancel_futures=True)


def _joined(parts: list[_Prepared]) -> _Prepared:
    """Consecutive prepared parts of one batch as that batch (each field is prepared on its own)."""
    if len(parts) == 1:
        return parts[0]
    return _Prepared(parts[0].start, np.concatenate([p.pixels for p in parts]),
                     np.concatenate([p.model_input for p in parts]), [c for p in parts for c in p.colour_failed],
                     sum(p.stain_s for p in parts))
