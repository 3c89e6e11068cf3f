"""``space/app.py`` as a real server (``python space/app.py`` subprocess) called through ``gradio_client``."""
from __future__ import annotations

import base64
import csv
import importlib
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from huggingface_hub import HfApi

from predictor import Predictor
from tests.hub_server import local_hub  # noqa: F401 - fixture
from tests.tiny_model import REPO_ROOT, run_space, write_test_image, write_tiny_model_folder

REAL_MODEL = REPO_ROOT / "hub_model"
REAL_DATA = REPO_ROOT.parent / "shared" / "data" / "lc25000-lung-224"


def _client(url: str) -> Client:
    return Client(url, verbose=False, download_files=False, analytics_enabled=False)


def _page_text(url: str) -> str:
    """All Markdown shown on the page (from the served config)."""
    with urllib.request.urlopen(f"{url}/config", timeout=10) as response:
        config = json.load(response)
    return "\n".join(str(c.get("props", {}).get("value") or "") for c in config["components"]
                     if c.get("type") == "markdown")


def _as_probs(answer: dict) -> dict[str, float]:
    return {c["label"]: c["confidence"] for c in answer["confidences"]}


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return write_tiny_model_folder(tmp_path_factory.mktemp("space") / "hub_model")


@pytest.fixture(scope="module")
def space_url(tiny_folder):
    with run_space(tiny_folder) as url:
        yield url


@pytest.fixture(scope="module")
def client(space_url) -> Client:
    return _client(space_url)


def test_one_public_endpoint_named_predict(client):
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert list(endpoints) == ["/predict"]
    assert [p["component"] for p in endpoints["/predict"]["parameters"]] == ["Image"]
    assert [r["component"] for r in endpoints["/predict"]["returns"]] == ["Label"]


@pytest.mark.parametrize("suffix", [".png", ".jpeg"])
def test_predict_equals_the_predictor(client, tiny_folder, tmp_path, suffix):
    image = write_test_image(tmp_path / f"tile{suffix}", size=(70, 50), seed=11)
    answer = client.predict(handle_file(image), api_name="/predict")
    direct = Predictor(tiny_folder).predict(image)
    assert answer["label"] == direct["name"]
    assert _as_probs(answer) == pytest.approx(direct["confidences"], abs=1e-6)
    # sorted best-first, as gr.Label shows them
    confidences = [c["confidence"] for c in answer["confidences"]]
    assert confidences == sorted(confidences, reverse=True)


def test_unreadable_file_is_a_clear_error_and_the_server_keeps_serving(client, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 this is not really a JPEG")
    with pytest.raises(AppError, match="not an image that can be read"):
        client.predict(handle_file(bad), api_name="/predict")
    with pytest.raises(AppError, match="No image received"):
        client.predict(None, api_name="/predict")
    good = write_test_image(tmp_path / "ok.png")
    assert client.predict(handle_file(good), api_name="/predict")["label"]


def test_page_shows_model_source_and_disclaimer(space_url, tiny_folder):
    text = _page_text(space_url)
    assert "tiny-test-model" in text
    assert f"local folder `{tiny_folder.resolve()}`" in text
    assert "Test model. Not a diagnostic device." in text  # disclaimer from config.json
    assert "synthetic test images" in text  # domain from config.json
    assert "Alpha tissue" in text and "`gamma`" in text  # class table from labels.json
    assert "lung" not in text.lower()  # nothing lung-specific is hard-coded


def test_ui_wiring(space_url):
    """Upload or button -> predict; its success fills the verdict; failure or clear blanks all."""
    with urllib.request.urlopen(f"{space_url}/config", timeout=10) as response:
        config = json.load(response)
    kind = {c["id"]: c["type"] for c in config["components"]}
    deps = {d["api_name"]: d for d in config["dependencies"]}
    predict = deps["predict"]
    assert sorted((kind[t], event) for t, event in predict["targets"]) == [("button", "click"),
                                                                            ("image", "upload")]
    assert [kind[i] for i in predict["inputs"]] == ["image"]
    assert [kind[o] for o in predict["outputs"]] == ["label", "state"]
    after = [d for d in config["dependencies"] if d["trigger_after"] == predict["id"]]
    on_success = [d for d in after if d["trigger_only_on_success"]]
    on_failure = [d for d in after if d["trigger_only_on_failure"]]
    assert [kind[o] for d in on_success for o in d["outputs"]] == ["markdown"]
    assert sorted(kind[o] for d in on_failure for o in d["outputs"]) == ["label", "markdown", "state"]
    assert all(d["api_visibility"] == "private" for d in config["dependencies"] if d is not predict)


def test_space_serves_a_pinned_hub_model(local_hub, tiny_folder, tmp_path):
    api = HfApi()
    api.create_repo("testuser/tiny-model", exist_ok=True)
    sha = api.upload_folder(repo_id="testuser/tiny-model", folder_path=tiny_folder).oid
    image = write_test_image(tmp_path / "tile.png", seed=5)
    env = {**local_hub.env, "MODEL_REPO": "testuser/tiny-model", "MODEL_REVISION": sha}
    with run_space(None, env=env) as url:
        answer = _client(url).predict(handle_file(image), api_name="/predict")
        text = _page_text(url)
    assert _as_probs(answer) == pytest.approx(Predictor(tiny_folder).predict(image)["confidences"], abs=1e-6)
    assert f"Hub repo `testuser/tiny-model` · revision `{sha}`" in text
    assert "local folder" not in text


def test_bad_model_folder_stops_start_with_one_clear_line(tmp_path):
    env = {**os.environ, "MODEL_DIR": str(tmp_path / "missing"), "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("MODEL_REPO", None)
    proc = subprocess.run([sys.executable, "app.py"], cwd=REPO_ROOT / "space", env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert f"Cannot start the Space: Model folder not found: {tmp_path / 'missing'}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_verdict_and_data_url_input(tiny_folder, monkeypatch):
    # In-process import of the app module for its small helpers (it loads the model at import).
    monkeypatch.setenv("MODEL_DIR", str(tiny_folder))
    monkeypatch.delenv("MODEL_REPO", raising=False)
    monkeypatch.delitem(sys.modules, "app", raising=False)
    app = importlib.import_module("app")
    try:
        result = app.PREDICTOR.predict(np.full((64, 64, 3), 128, np.uint8))
        words = app.verdict(result)
        assert words.startswith(f"**Most likely: {result['name']}**")
        assert f"({result['confidence']:.0%} model probability)" in words
        assert app.verdict(None) == ""
        abstained = app.verdict({**result, "abstained": True, "abstain_reason": "Because."})
        assert abstained == "**Not recognised as synthetic test images:** Because. Treat this as no answer."
        assert result["name"] not in abstained  # no class is named when the model abstains
        data = base64.b64encode(write_test_image(Path(tiny_folder).parent / "d.png").read_bytes()).decode()
        labels, full = app.predict({"path": None, "url": f"data:image/png;base64,{data}"})
        assert labels == full["confidences"] and sum(labels.values()) == pytest.approx(1.0, abs=1e-5)
    finally:
        sys.modules.pop("app", None)


def _real_tiles(class_ids: list[str], *, per_class: int = 8) -> list[tuple[str, Path]]:
    """Tiles per class, spread over the sorted list; test-split tiles when the manifest exists."""
    manifest = REPO_ROOT / "training" / "splits" / "lc25000-lung-grouped.csv"
    if manifest.is_file():
        with manifest.open(newline="") as handle:
            rows = [r for r in csv.DictReader(handle) if r.get("split") == "test"]
        by_class = {c: sorted(REAL_DATA / r["path"] for r in rows if r["label"] == c) for c in class_ids}
    else:
        by_class = {c: sorted((REAL_DATA / c).glob("*.jp*g")) for c in class_ids}
    tiles = []
    for class_id, files in by_class.items():
        assert files, f"no tiles for class {class_id} in {REAL_DATA}"
        tiles += [(class_id, files[i * len(files) // per_class]) for i in range(per_class)]
    return tiles


def test_real_model_on_real_tiles():
    """The trained hub_model, served by the Space, classifies real held-out LC25000 tiles.

    The 75% bar is far above chance (33%) and far below the model's accuracy: it catches a
    wrong label order or broken preprocessing, not small model changes.
    """
    missing = [str(p) for p in (REAL_MODEL / "model.keras", REAL_DATA) if not p.exists()]
    if missing:
        message = f"real model or dataset not present: {', '.join(missing)}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI must have them)")
        pytest.skip(message)
    predictor = Predictor(REAL_MODEL)
    tiles = _real_tiles(predictor.class_ids)
    with run_space(None) as url:  # MODEL_DIR unset: the app's default hub_model/
        client = _client(url)
        assert "local folder" in _page_text(url)
        correct = 0
        for class_id, tile in tiles:
            shown = _as_probs(client.predict(handle_file(tile), api_name="/predict"))
            direct = predictor.predict(tile)
            # the Space shows the top classes (all of them for a 3-class model), same numbers
            assert shown == pytest.approx({name: direct["confidences"][name] for name in shown}, abs=1e-5)
            assert max(shown, key=shown.get) == direct["name"]
            correct += direct["label"] == class_id
    assert correct >= 0.75 * len(tiles), f"only {correct}/{len(tiles)} real tiles classified correctly"
