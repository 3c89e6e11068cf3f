"""How often Gradio's queue looks for an event to start: every 5 ms here, not Gradio's 1 ms.

Gradio's queue (``gradio.queueing.Queue.start_processing``) has no wake-up signal: while it has no
event it can start, it sleeps ``sleep_when_free`` seconds and looks again, 1 ms on Linux. That is
1,000 wake-ups of the event loop a second, about 5% of a core on an idle Space, and on the 2 cores
the model needs it cost about 12 ms of CPU per tile of a folder sent to ``/predict_batch``: Space CPU
94 -> 82-85 ms per tile, and the folder client from 0.78-0.79x to 0.83-0.84x the bare engine, two
runs each way alternating (``scripts/perf/serving_profile.py``; docs/operations.md). The price: an
event that arrives on an empty queue waits up to 5 ms (2.5 on average) more before it starts.

Gradio offers no public setting for it, so this sets the queue's attribute; a Gradio that no longer
has it is an error at start (and in ``tests/test_queue_poll.py``), not a silent return to 1 ms.

Example:
    >>> demo.queue(default_concurrency_limit=2)
    >>> set_queue_poll(demo)
"""
from __future__ import annotations

import gradio as gr

QUEUE_POLL_S = 0.005

__all__ = ["QUEUE_POLL_S", "set_queue_poll"]


def set_queue_poll(blocks: gr.Blocks, seconds: float = QUEUE_POLL_S) -> None:
    """Make ``blocks``'s queue (already configured with ``blocks.queue(...)``) look for events every ``seconds``."""
    queue = getattr(blocks, "_queue", None)
    if queue is None or not hasattr(queue, "sleep_when_free"):
        raise RuntimeError(f"gradio {gr.__version__} has no queue poll interval to set (Queue.sleep_when_free); "
                           "see space/queue_poll.py")
    if not 0 < seconds <= 0.05:   # beyond 50 ms every call would wait visibly
        raise ValueError(f"queue poll interval {seconds} s is outside (0, 0.05]")
    queue.sleep_when_free = seconds
