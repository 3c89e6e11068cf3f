"""``scripts/space_batch.py``: the folder client's ``/predict_batch`` calls over Gradio's plain HTTP API, one
upload request per chunk, against a real Space on the tiny model."""
from __future__ import annotations

import pytest

from imageclf.model.predictor import Predictor
from scripts.predict_client import connect
from scripts.space_batch import BatchCallError, PlainHttpCalls, batch_calls
from tests.support.field_rows import one_field
from tests.support.tiny_model import write_test_image


def test_a_chunk_goes_up_in_one_request_and_answers_in_order(tiny_space, tiny_folder, tmp_path):
    paths = [write_test_image(tmp_path / f"t{i}.png", seed=70 + i) for i in range(3)]
    calls = batch_calls(connect(tiny_space), in_flight=2)
    assert isinstance(calls, PlainHttpCalls)
    try:
        first, second = calls.submit(paths[:2], "auto"), calls.submit(paths[2:], "native")
        rows = first.result() + second.result()
    finally:
        calls.close()
    predictor = Predictor(tiny_folder)
    assert [row["file"] for row in rows] == [path.name for path in paths]
    for path, row in zip(paths, rows, strict=True):
        assert row["error"] is None and row["label"] == one_field(predictor, path)["label"]


def test_the_spaces_error_is_the_calls_error(tiny_space, tmp_path):
    calls = batch_calls(connect(tiny_space), in_flight=1)
    try:
        with pytest.raises(BatchCallError) as info:
            calls.submit([write_test_image(tmp_path / "t.png")], "sideways").result()
    finally:
        calls.close()
    assert "sideways" in str(info.value) and "\n" not in str(info.value)
