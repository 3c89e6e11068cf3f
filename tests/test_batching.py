"""``space/batching.py``: concurrent single calls meet in batches; results and errors go to their callers."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from batching import BatchRunner


def _slow_square(items: list[int]) -> list[int]:
    time.sleep(0.05)  # a forward pass: later callers pile up meanwhile
    return [item * item for item in items]


def test_concurrent_calls_share_batches_and_get_their_own_results():
    runner = BatchRunner(_slow_square, max_batch_size=8)
    with ThreadPoolExecutor(24) as pool:
        results = list(pool.map(runner, range(24)))
    assert results == [i * i for i in range(24)]
    assert runner.largest_batch == 8            # capped at max_batch_size
    assert runner.batches < 24                  # fewer forward passes than calls


def test_a_lone_call_is_not_held_back():
    runner = BatchRunner(_slow_square, max_batch_size=32, max_wait_s=0.002)
    start = time.monotonic()
    assert runner(7) == 49
    assert time.monotonic() - start < 0.5 and runner.largest_batch == 1


def test_a_failing_batch_fails_its_callers_and_the_worker_lives_on():
    calls = []

    def fn(items):
        calls.append(list(items))
        if "boom" in items:
            raise RuntimeError("model failed")
        return [item.upper() for item in items]

    runner = BatchRunner(fn, max_batch_size=1)
    with pytest.raises(RuntimeError, match="model failed"):
        runner("boom")
    assert runner("ok") == "OK"
    assert calls == [["boom"], ["ok"]]


def test_wrong_result_count_is_an_error():
    runner = BatchRunner(lambda items: [], max_batch_size=4)
    with pytest.raises(RuntimeError, match="returned 0 results for 1 items"):
        runner(1)


def test_one_worker_thread():
    runner = BatchRunner(_slow_square)
    before = threading.active_count()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(runner, range(8)))
    assert threading.active_count() - before <= 1
