"""One rule for every path: the UI, /predict, /predict_batch, /predict_tiles, /explain, MCP and
predict_client all answer through the stages of ``imageclf.core.rule`` (plan, engine, conclude), so
the same bytes get the same answer whichever way they come in."""
from __future__ import annotations

import asyncio
import base64
import csv
import sys
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client

from imageclf.core import rule
from imageclf.model.predictor import Predictor
from scripts.predict_client import main as predict_client_main
from tests.conftest import HUB_MODEL, missing
from tests.support.tiny_model import imported_app, run_ui_event, write_test_image, write_tiny_model_folder


@pytest.fixture
def spied_app(tmp_path, monkeypatch):
    """The app in-process on a tiny model, with ``rule.conclude`` (the verdict stage) recording every call."""
    folder = write_tiny_model_folder(tmp_path / "model")
    calls = []
    real = rule.conclude

    def spy(plan, outputs, spec):
        analysis = real(plan, outputs, spec)
        calls.append(analysis)
        return analysis

    monkeypatch.setattr(rule, "conclude", spy)
    with imported_app(monkeypatch, folder) as app:
        yield app, calls


def test_no_endpoint_bypasses_the_shared_rule(spied_app, tmp_path):
    app, calls = spied_app
    image = write_test_image(tmp_path / "x.png", size=(100, 90), seed=7)
    service = app.SERVICE
    answers = {}
    _, answers["predict"] = service.predict({"path": str(image)}, "native")
    copy = tmp_path / "y.png"   # predict_batch deletes API uploads once read: send a copy
    copy.write_bytes(image.read_bytes())
    answers["predict_batch"] = service.predict_batch([str(copy)], "native")[0]
    _, answers["predict_tiles"] = service.predict_tiles({"path": str(image)}, "native")
    service.explain({"path": str(image)}, 0.5, "native")
    shown = run_ui_event(app, "analyze", [{"path": str(image)}, 0.45, "native"])
    answers["ui"] = shown["raw-result"].root
    assert len(calls) == 5, "an endpoint answered without the rule's verdict stage"
    expected = calls[0].to_json()
    for path, answer in answers.items():   # same bytes, same answer, whichever path
        assert {k: answer[k] for k in expected} == expected, path


def _mcp_predict(url: str, image: Path) -> str:
    data_url = "data:image/png;base64," + base64.b64encode(image.read_bytes()).decode()

    async def call() -> str:
        async with streamablehttp_client(f"{url}/gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                answer = await session.call_tool("predict", {"image": data_url, "scale": "native"})
                assert not answer.isError, answer.content
                return "\n".join(part.text for part in answer.content if hasattr(part, "text"))

    return asyncio.run(call())


def test_mcp_predict_is_the_same_rule(tiny_space, tiny_folder, tmp_path):
    image = write_test_image(tmp_path / "m.png", size=(300, 120), seed=9)
    text = _mcp_predict(tiny_space, image)
    direct = Predictor(tiny_folder).analyze(image, scale="native")
    assert f"'label': '{direct.label}'" in text and f"'factor': {direct.scale.factor}" in text


def test_mcp_abstention_names_no_class(abstaining_space, abstaining_folder, tmp_path):
    image = write_test_image(tmp_path / "a.png", seed=4)
    text = _mcp_predict(abstaining_space, image)
    names = Predictor(abstaining_folder).names
    assert "'abstained': True" in text and "Not recognised" in text
    assert not any(name in text for name in names), text


ORIGINALS = Path(__file__).resolve().parents[2] / "shared" / "data" / "external-he" / "lc25000-lung-768"


@pytest.mark.slow
def test_full_size_originals_get_one_label_on_every_path(hub_space, tmp_path, capsys):
    """The 30 768 px LC25000 originals (what a user downloads): the same label through the Python
    predictor, /predict, /predict_batch, /predict_tiles and predict_client's CSV; >= 93% right."""
    files = sorted(ORIGINALS.glob("*/*.jp*g"))
    if len(files) != 30:
        missing(f"the 30 full-size LC25000 originals are not at {ORIGINALS}")
    truth = [f.parent.name for f in files]
    predictor = Predictor(HUB_MODEL)
    labels = {"python": [predictor.analyze(f).label for f in files]}
    client = Client(hub_space, verbose=False)
    labels["predict"] = [client.predict(handle_file(f), "auto", api_name="/predict")[1]["label"] for f in files]
    labels["predict_tiles"] = [client.predict(handle_file(f), "auto", api_name="/predict_tiles")[1]["label"]
                               for f in files]
    rows = client.predict([handle_file(f) for f in files], "auto", api_name="/predict_batch")
    labels["predict_batch"] = [row["label"] for row in rows]
    out = tmp_path / "originals.csv"
    assert predict_client_main([hub_space, str(ORIGINALS), "--out", str(out), "--no-progress"]) == 0
    with out.open(newline="") as handle:   # label: the class id, as in the Space's JSON; name: its name
        by_path = {Path(row["path"]).name: row["label"] or None for row in csv.DictReader(handle)}
    labels["predict_client"] = [by_path[f.name] for f in files]
    right = {path: float(np.mean([a == b for a, b in zip(found, truth, strict=True)]))
             for path, found in labels.items()}
    print("accuracy per path on the 30 originals:", right, file=sys.stderr)
    for path, found in labels.items():
        assert found == labels["python"], path
    assert min(right.values()) >= 0.93, right
