"""``space/app.py`` as a real server (``python space/app.py`` subprocess) called through ``gradio_client``."""
from __future__ import annotations

import base64
import csv
import dataclasses
import html
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import gradio as gr
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from huggingface_hub import HfApi

import panels
from imageclf.core.refusal import Reason, Refusal
from imageclf.model.explain import overlay
from imageclf.core.imaging import ImageError, decode_image
from imageclf.model.predictor import Predictor
from tests.support.tiny_model import REPO_ROOT, imported_app, run_space, run_ui_event, write_test_image
from tests.support.field_rows import one_field

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
    """gr.Label output -> {class name: probability}."""
    return {c["label"]: c["confidence"] for c in answer["confidences"]}


@pytest.fixture(scope="module")
def client(tiny_space) -> Client:
    return _client(tiny_space)


def _config(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/config", timeout=10) as response:
        return json.load(response)


def test_public_endpoints_only(client, tiny_space):
    info = client.view_api(return_format="dict", print_info=False)
    assert list(info["named_endpoints"]) == ["/predict", "/predict_batch", "/explain", "/predict_tiles", "/predict_slide"]
    assert info["unnamed_endpoints"] == {}


@pytest.mark.parametrize("suffix", [".png", ".jpeg"])
def test_predict_equals_the_predictor(client, tiny_folder, tmp_path, suffix):
    image = write_test_image(tmp_path / f"tile{suffix}", size=(70, 50), seed=11)
    answer, result = client.predict(handle_file(image), api_name="/predict")
    direct = one_field(Predictor(tiny_folder), image)
    assert result["label"] == direct["label"] and result["confidence"] == pytest.approx(direct["confidence"])
    assert answer["label"] == direct["name"]
    assert _as_probs(answer) == pytest.approx(direct["confidences"], abs=1e-6)
    # sorted best-first, as gr.Label shows them
    confidences = [c["confidence"] for c in answer["confidences"]]
    assert confidences == sorted(confidences, reverse=True)


@pytest.mark.parametrize("api_name", ["/predict", "/explain", "/predict_tiles"])
def test_unreadable_file_is_a_clear_error_and_the_server_keeps_serving(client, tmp_path, api_name):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0" + bytes(64))
    with pytest.raises(ImageError) as expected:
        decode_image(bad)
    with pytest.raises(AppError) as err:
        client.predict(handle_file(bad), api_name=api_name)
    assert str(err.value) == html.escape(str(expected.value))
    with pytest.raises(AppError, match="No image received"):
        client.predict(None, api_name=api_name)
    good = write_test_image(tmp_path / "ok.png")
    assert client.predict(handle_file(good), api_name="/predict")[1]["label"]


def test_page_shows_model_source_and_disclaimer(tiny_space, tiny_folder):
    text = _page_text(tiny_space)
    assert "tiny-test-model" in text
    assert "Model **tiny-test-model** from local folder (no Hub revision)." in text
    assert str(tiny_folder.resolve()) not in text        # the server's own paths are not the page's business
    assert "Test model. Not a diagnostic device." in text  # disclaimer from config.json
    assert "synthetic test images" in text  # domain from config.json
    assert "Alpha tissue" in text and "`gamma`" in text  # class table from labels.json
    assert "lung" not in text.lower()  # nothing lung-specific is hard-coded
    # The model panel: metrics.json, the card, data and limitations (generic fallbacks here).
    assert "| Accuracy | 50.00% |" in text and "| Macro F1 | 40.00% |" in text
    assert "**Model card:** `README.md` in the local model folder" in text
    assert "**Training data:** Not stated in the model's config.json." in text
    assert "**Limitations:** Made for synthetic test images only. The model has only seen" in text
    assert "**Repo:** none (local folder)" in text


def test_examples_gallery_from_examples_dir(tiny_space, tiny_examples):
    config = _config(tiny_space)
    dataset = next(c for c in config["components"] if c.get("props", {}).get("elem_id") == "examples")
    samples = dataset["props"]["samples"]
    assert [sample[0]["orig_name"] for sample in samples] == ["tile_a.png", "tile_b.png"]
    with urllib.request.urlopen(samples[0][0]["url"].replace("localhost", "127.0.0.1"), timeout=10) as response:
        assert response.read() == (tiny_examples / "tile_a.png").read_bytes()  # served as is


def test_ui_wiring(tiny_space):
    """Upload, button or example -> one private "analyze" step; failure or clear blanks everything;
    the slider re-blends; the public endpoints have stable names and no hidden UI side effects."""
    config = _config(tiny_space)
    kind = {c["id"]: c["type"] for c in config["components"]}
    elem = {c["id"]: c.get("props", {}).get("elem_id") for c in config["components"]}
    by_id = {e: i for i, e in elem.items() if e}
    for name in ("input-image", "verdict", "top-classes", "gradcam", "gradcam-opacity", "tile-map",
                 "tile-summary", "raw-result", "examples", "batch-files", "batch-result"):
        assert name in by_id, name
    deps = config["dependencies"]
    analyze = [d for d in deps if d["api_name"].startswith("analyze")]
    direct = next(d for d in analyze if d["targets"] != [[None, "then"]])
    assert sorted((kind[t], event) for t, event in direct["targets"]) == [("button", "click"), ("image", "upload")]
    assert [elem[i] for i in direct["inputs"]] == ["input-image", "gradcam-opacity", "scale"]
    shown = [elem[o] or kind[o] for o in direct["outputs"]]
    assert shown == ["verdict", "top-classes", "raw-result", "gradcam", "state", "group", "tile-map",
                     "tile-summary", "group"]
    example_dep = next(d for d in deps if d["api_name"] == "load_example")
    assert any(d["trigger_after"] == example_dep["id"] for d in analyze)  # examples run the analysis
    for dep in analyze:
        failure = [d for d in deps if d["trigger_after"] == dep["id"] and d["trigger_only_on_failure"]]
        assert [sorted(d["outputs"]) for d in failure] == [sorted(dep["outputs"])]
    clear = next(d for d in deps if d["targets"] == [[by_id["input-image"], "clear"]])
    assert sorted(clear["outputs"]) == sorted(direct["outputs"])
    slider = next(d for d in deps if d["targets"] == [[by_id["gradcam-opacity"], "change"]])
    assert slider["outputs"] == [by_id["gradcam"]] and slider["queue"] is False
    public = {d["api_name"]: d for d in deps if d["api_visibility"] == "public"}
    assert sorted(public) == ["explain", "predict", "predict_batch", "predict_slide", "predict_tiles"]
    assert public["predict_batch"]["targets"] == [[by_id["batch-button"], "click"]]
    # Every public endpoint takes the scale option from the same component (one rule, one default).
    assert all(by_id["scale"] in public[name]["inputs"] for name in public if name != "predict_slide")
    assert [elem[i] for i in public["predict_slide"]["inputs"]] == ["slide-file", "slide-mpp"]   # its own scale
    assert all(public[name]["targets"] == [] for name in ("predict", "explain", "predict_tiles"))  # API only


@pytest.mark.slow
def test_space_serves_a_pinned_hub_model(local_hub, tiny_folder, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(tiny_folder, repo)
    (repo / "examples").mkdir()
    write_test_image(repo / "examples" / "hub_example.png", seed=70)
    api = HfApi()
    api.create_repo("testuser/tiny-model", exist_ok=True)
    sha = api.upload_folder(repo_id="testuser/tiny-model", folder_path=repo).oid
    image = write_test_image(tmp_path / "tile.png", seed=5)
    env = {**local_hub.env, "MODEL_REPO": "testuser/tiny-model", "MODEL_REVISION": sha}
    with run_space(None, env=env) as url:
        answer, result = _client(url).predict(handle_file(image), api_name="/predict")
        text = _page_text(url)
        config = _config(url)
        with urllib.request.urlopen(f"{url}/healthz", timeout=10) as response:
            health = json.load(response)
        # MCP is off unless GRADIO_MCP_SERVER=true (the shared test Spaces run it on).
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{url}/gradio_api/mcp/schema", timeout=10)
    assert err.value.code == 404
    assert _as_probs(answer) == pytest.approx(one_field(Predictor(tiny_folder), image)["confidences"], abs=1e-6)
    assert result["model_repo"] == "testuser/tiny-model" and result["model_revision"] == sha
    assert health == {"status": "ok", "model_repo": "testuser/tiny-model", "model_revision": sha,
                      "model_name": "tiny-test-model"}
    assert f"Hub repo `testuser/tiny-model` · revision `{sha}`" in text
    assert f"**Model card:** https://huggingface.co/testuser/tiny-model/blob/{sha}/README.md" in text
    assert f"**Repo:** `testuser/tiny-model` · **pinned revision:** `{sha}`" in text
    assert "local folder" not in text
    dataset = next(c for c in config["components"] if c.get("props", {}).get("elem_id") == "examples")
    assert [s[0]["orig_name"] for s in dataset["props"]["samples"]] == ["hub_example.png"]


@pytest.mark.slow
def test_bad_model_folder_stops_start_with_one_clear_line(tmp_path):
    env = {**os.environ, "MODEL_DIR": str(tmp_path / "missing"), "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("MODEL_REPO", None)
    proc = subprocess.run([sys.executable, "app.py"], cwd=REPO_ROOT / "space", env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert f"Cannot start the Space: Model folder not found: {tmp_path / 'missing'}" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture
def app_module(tiny_folder, monkeypatch):
    """The app module imported in-process (it loads the model at import) for its UI functions."""
    with imported_app(monkeypatch, tiny_folder) as app:
        yield app


def test_verdict_and_data_url_input(app_module, tiny_folder):
    app = app_module
    analysis = app.PREDICTOR.analyze(np.full((64, 64, 3), 128, np.uint8))
    words = app.verdict(analysis)
    # tiny model: no fitted temperature, so not called calibrated
    assert words.startswith(f"**{analysis.name} — {analysis.confidence:.0%} (model probability, not calibrated)**")
    assert "Scale: native: the model declares no scale reference; answered as one field (64 px)." in words
    assert app.verdict(None) == ""
    abstained = app.verdict(dataclasses.replace(
        analysis, verdict=dataclasses.replace(analysis.verdict, refusal=Refusal(Reason.CONFIDENCE))))
    assert abstained.startswith(f"**Not recognised as synthetic test images:** {Reason.CONFIDENCE.sentence()} "
                                "Treat this as no answer.")
    assert not any(name in abstained for name in app.PREDICTOR.names)  # no class is named when abstaining
    data = base64.b64encode(write_test_image(Path(tiny_folder).parent / "d.png").read_bytes()).decode()
    labels, full = app.SERVICE.predict({"path": None, "url": f"data:image/png;base64,{data}"})
    assert labels == pytest.approx(one_field(app.PREDICTOR, Path(tiny_folder).parent / "d.png")["confidences"])
    assert sum(labels.values()) == pytest.approx(1.0, abs=1e-5) and full["label"] in app.PREDICTOR.class_ids


def test_ui_small_image_shows_verdict_and_grad_cam(app_module, tmp_path):
    rgb = np.random.default_rng(2).integers(0, 256, (100, 90, 3), dtype=np.uint8)
    path = tmp_path / "small.png"
    cv2.imwrite(str(path), rgb[..., ::-1])
    shown = run_ui_event(app_module, "analyze", [{"path": str(path)}, 0.3, "auto"])
    direct = one_field(app_module.PREDICTOR, path)
    assert shown["verdict"].startswith(f"**{direct['name']} — ")
    assert shown["top-classes"]["label"] == direct["name"]
    assert shown["gradcam"]["value"] is not None   # the heatmap, titled "Grad-CAM of the predicted class"
    assert shown["group#5"] == {"visible": True, "__type__": "update"}      # Grad-CAM panel shown
    assert shown["group#8"] == {"visible": False, "__type__": "update"}     # tile panel hidden
    assert shown["tile-map"] is None and shown["tile-summary"] == ""
    cam = app_module.SERVICE.gradcam(rgb)
    again = app_module.reblend(cam, 0.8)  # the slider: same heatmap, new opacity, no model call
    assert np.array_equal(again, overlay(rgb, cam["heatmap"], opacity=0.8))
    assert app_module.reblend(None, 0.8) == gr.skip()


def test_ui_abstained_image_names_no_class(abstaining_folder, tmp_path, monkeypatch):
    """When the model abstains the page names no class: no top classes, no class-labelled Grad-CAM."""
    with imported_app(monkeypatch, abstaining_folder) as app:  # top probability is never >= 1.0
        path = write_test_image(tmp_path / "small.png", size=(100, 90), seed=2)
        assert one_field(app.PREDICTOR, path)["abstained"]
        shown = run_ui_event(app, "analyze", [{"path": str(path)}, 0.45, "auto"])
    assert shown["verdict"].startswith("**Not recognised as synthetic test images:**")
    assert not any(name in shown["verdict"] for name in app.PREDICTOR.names)
    assert not (shown["top-classes"] or {}).get("confidences")
    assert shown["gradcam"] is None and shown["group#5"]["visible"] is False  # Grad-CAM panel hidden
    raw = shown["raw-result"].root  # gr.JSON's postprocessed value
    assert raw["abstained"] is True and raw["abstain_reason"]
    assert raw["label"] is raw["name"] is raw["confidence"] is raw["probabilities"] is None  # no class anywhere


def test_ui_large_image_goes_through_the_fields(app_module, tmp_path):
    rgb = np.full((700, 300, 3), 250, np.uint8)
    rgb[:400] = np.random.default_rng(4).integers(40, 220, (400, 300, 3), dtype=np.uint8)
    path = tmp_path / "large.png"
    cv2.imwrite(str(path), rgb[..., ::-1])
    shown = run_ui_event(app_module, "analyze", [{"path": str(path)}, 0.45, "native"])
    analysis = app_module.PREDICTOR.analyze(rgb, scale="native")
    fields = analysis.fields
    assert not analysis.one_field and fields.classified > 1
    assert shown["verdict"].startswith(f"**{analysis.name} — ")
    assert f"mean over {fields.classified - fields.abstained} tissue fields" in shown["verdict"]
    assert shown["group#5"]["visible"] is False and shown["group#8"]["visible"] is True
    assert shown["gradcam"] is None and shown["tile-map"]["path"].endswith(".png")
    assert "background fields skipped" in shown["tile-summary"]
    shares = {c["label"]: c["confidence"] for c in shown["top-classes"]["confidences"]}
    assert shares == pytest.approx(analysis.confidences)   # the averaged probabilities, not tile counts


def test_ui_bad_file_is_an_error(app_module, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(32))
    with pytest.raises(gr.Error):
        run_ui_event(app_module, "analyze", [{"path": str(bad)}, 0.45, "auto"])


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


@pytest.mark.slow
def test_real_model_on_real_tiles(hub_space):
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
    url = hub_space
    client = _client(url)
    assert "local folder" in _page_text(url)
    correct = 0
    for class_id, tile in tiles:
        label, _ = client.predict(handle_file(tile), api_name="/predict")
        direct = predictor.analyze(tile)
        if direct.abstained:
            assert label["label"] == "Not recognised" and not label.get("confidences")
            continue
        shown = _as_probs(label)
        # the Space shows the top classes (all of them for a 3-class model), same numbers
        assert shown == pytest.approx({name: direct.confidences[name] for name in shown}, abs=1e-5)
        assert max(shown, key=shown.get) == direct.name
        correct += direct.label == class_id
    assert correct >= 0.75 * len(tiles), f"only {correct}/{len(tiles)} real tiles classified correctly"
    # The bundled model carries a fitted temperature: its verdict says "calibrated".
    result = predictor.analyze(tiles[0][1])
    words = panels.verdict(result, domain=predictor.domain, calibrated=predictor.model_config.calibrated)
    assert words.startswith(f"**{result.name} — ") and "(calibrated)**" in words or result.abstained
