"""Run concurrent single requests as one batch: one worker thread, one forward pass per batch.

Why not Gradio's own ``batch=True`` for ``/predict``: Gradio runs a batch as one event, so
an exception for one unreadable upload would fail every request that shared its batch, and
in Gradio 6.31 event validators are ignored for batch functions. Here each request decodes
and validates its own image first (its own clear error), and only ready model inputs meet
in the batch.

:class:`BatchingEngine` puts a :class:`BatchRunner` in front of a field engine: the Space's
``Service`` hands it to the rule like any other ``imageclf.core.engine.FieldEngine``.

Example:
    >>> engine = BatchingEngine(predictor.engine, max_batch_size=32)
    >>> engine.run(one_field[None]).probabilities      # called from many threads at once
    array([[0.97, 0.01, 0.02]])
    >>> engine.runner.largest_batch                     # how many met in one forward pass
    7
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

import numpy as np

from imageclf.core.engine import FieldEngine, FieldOutputs

T = TypeVar("T")
R = TypeVar("R")

__all__ = ["BatchRunner", "BatchingEngine"]


class BatchRunner(Generic[T, R]):
    """Call ``fn(list of items) -> list of results`` on batches gathered from concurrent callers.

    A caller blocks until its own result is ready. A batch holds whatever is waiting when
    the worker becomes free (plus what arrives within ``max_wait_s``), up to ``max_batch_size``.
    If ``fn`` raises, every caller of that batch gets the exception.
    """

    def __init__(self, fn: Callable[[list[T]], Sequence[R]], *, max_batch_size: int = 32,
                 max_wait_s: float = 0.002, name: str = "batch-runner") -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1.")
        self.fn = fn
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.batches = 0
        self.largest_batch = 0
        self._queue: queue.SimpleQueue[tuple[T, Future]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._start_lock = threading.Lock()

    def __call__(self, item: T, *, timeout: float | None = None) -> R:
        """Queue one item and wait for its result (re-raises ``fn``'s exception)."""
        future: Future = Future()
        self._queue.put((item, future))
        self._ensure_started()
        return future.result(timeout=timeout)

    def _ensure_started(self) -> None:
        if not self._thread.is_alive():
            with self._start_lock:
                if not self._thread.is_alive() and self._thread.ident is None:
                    self._thread.start()

    def _loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.max_batch_size:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            items = [item for item, _ in batch]
            try:
                results = list(self.fn(items))
                if len(results) != len(items):
                    raise RuntimeError(f"Batch function returned {len(results)} results for {len(items)} items.")
            except BaseException as err:  # hand the failure to the callers; the worker lives on
                for _, future in batch:
                    future.set_exception(err)
                continue
            self.batches += 1
            self.largest_batch = max(self.largest_batch, len(items))
            for (_, future), result in zip(batch, results, strict=True):
                future.set_result(result)


class BatchingEngine:
    """A field engine whose single-field calls from concurrent requests share forward passes.

    A batch of several fields (one large image) already fills a forward pass and goes straight
    to the inner engine; a single field joins whatever waits when the runner is free. By default
    it waits for no company (``max_wait_s`` 0): fields that arrive while a pass runs (16 ms or
    more) queue and meet in the next one anyway, and a lone request is not held back.
    """

    def __init__(self, inner: FieldEngine, *, max_batch_size: int = 32, max_wait_s: float = 0.0) -> None:
        self.inner = inner
        self.runner: BatchRunner[np.ndarray, FieldOutputs] = BatchRunner(self._run_fields, max_batch_size=max_batch_size,
                                                                         max_wait_s=max_wait_s)

    def run(self, fields: np.ndarray) -> FieldOutputs:
        if len(fields) != 1:
            return self.inner.run(fields)
        return self.runner(fields[0])

    def _run_fields(self, fields: list[np.ndarray]) -> list[FieldOutputs]:
        # One output per field, every score kept (feature check and tissue gate alike).
        return self.inner.run(np.stack(fields)).split()
