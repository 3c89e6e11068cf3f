"""``space/queue_poll.py``: the Space's queue looks for events every 5 ms, on the pinned Gradio."""
from __future__ import annotations

import inspect

import gradio as gr
import pytest
from gradio import queueing

from queue_poll import QUEUE_POLL_S, set_queue_poll


def _queued_blocks() -> gr.Blocks:
    with gr.Blocks() as demo:
        gr.Button().click(lambda: None)
    return demo.queue(default_concurrency_limit=2, max_size=256)


def test_the_poll_interval_is_the_one_gradios_queue_loop_sleeps():
    demo = _queued_blocks()
    assert demo._queue.sleep_when_free == 0.001      # Gradio's own on Linux: what the change is measured against
    set_queue_poll(demo)
    assert demo._queue.sleep_when_free == QUEUE_POLL_S == 0.005
    # The knob is live: the loop that starts events sleeps exactly this attribute while it has none.
    assert "await asyncio.sleep(self.sleep_when_free)" in inspect.getsource(queueing.Queue.start_processing)


def test_a_gradio_without_the_knob_or_a_silly_interval_is_an_error():
    with gr.Blocks() as unqueued:
        gr.Button()
    unqueued._queue = None
    with pytest.raises(RuntimeError, match="no queue poll interval"):
        set_queue_poll(unqueued)
    with pytest.raises(ValueError, match="outside"):
        set_queue_poll(_queued_blocks(), 1.0)
