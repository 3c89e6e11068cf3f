"""The Space's public API on a real server (``python space/app.py``): every named endpoint,
``/healthz`` and the MCP tools, on the tiny model and (lung-specific checks) the bundled one."""
from __future__ import annotations

import asyncio
import base64
import json
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client

from imageclf import field_map
from imageclf.core import fields as tiling
from imageclf.core.colour import tissue_mask
from imageclf.core.refusal import Reason
from imageclf.model.explain import colourise
from imageclf.model.gradcam import GradCam
from imageclf.core.imaging import ImageError, decode_image
from imageclf.model.predictor import Predictor
from tests.conftest import HUB_MODEL
from tests.support.tiny_model import write_test_image
from tests.support.field_rows import field_rows, one_field

ENDPOINTS = ["/predict", "/predict_batch", "/explain", "/predict_tiles", "/predict_slide"]
RESULT_KEYS = {"label", "name", "confidence", "probabilities", "abstained", "abstain_reason", "abstain_code", "scale", "fields", "model_repo",
               "model_revision"}


def _client(url: str) -> Client:
    return Client(url, verbose=False, download_files=False, analytics_enabled=False)


def _read_output_image(file_data: dict) -> np.ndarray:
    """An image output (served file) as RGB uint8, fetched over HTTP like any client would."""
    with urllib.request.urlopen(file_data["url"], timeout=10) as response:
        return cv2.cvtColor(cv2.imdecode(np.frombuffer(response.read(), np.uint8), cv2.IMREAD_COLOR),
                            cv2.COLOR_BGR2RGB)


def _write_png(path: Path, rgb: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture(scope="module")
def tiny_predictor(tiny_folder) -> Predictor:
    return Predictor(tiny_folder)


@pytest.fixture(scope="module")
def client(tiny_space) -> Client:
    return _client(tiny_space)


def test_named_endpoints(client):
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert sorted(endpoints) == sorted(ENDPOINTS)
    shapes = {name: ([p["component"] for p in e["parameters"]], [r["component"] for r in e["returns"]])
              for name, e in endpoints.items()}
    assert shapes == {"/predict": (["Image", "Dropdown"], ["Label", "Json"]),
                      "/predict_batch": (["File", "Dropdown"], ["Json"]),
                      "/explain": (["Image", "Slider", "Dropdown"], ["Image"]),
                      "/predict_tiles": (["Image", "Dropdown"], ["Image", "Json"]),
                      "/predict_slide": (["File", "Textbox"], ["Image", "Markdown", "Json", "File", "File", "File", "Html"])}
    scale = {name: e["parameters"][-1] for name, e in endpoints.items() if name != "/predict_slide"}
    assert all(p["parameter_name"] == "scale" and p["parameter_default"] == "auto" for p in scale.values())
    assert endpoints["/predict_slide"]["parameters"][-1]["parameter_name"] == "mpp"   # a slide states its own scale


def test_predict_json(client, tiny_predictor, tmp_path):
    image = write_test_image(tmp_path / "t.png", seed=4)
    labels, result = client.predict(handle_file(image), api_name="/predict")
    direct = one_field(tiny_predictor, image)
    assert set(result) == RESULT_KEYS
    assert result["label"] == direct["label"] and result["name"] == direct["name"] == labels["label"]
    assert result["probabilities"] == pytest.approx(direct["probabilities"], abs=1e-6)
    assert result["abstained"] is False and result["abstain_reason"] is None
    assert result["model_repo"] is None and result["model_revision"] is None  # local folder


def test_concurrent_predicts_each_get_their_own_answer(tiny_space, tiny_predictor, tmp_path):
    """Concurrent callers share forward passes (space/batching.py); no answer may reach the wrong one.

    One client per caller, like separate users (and clear of gradio_client's shared-stream race).
    """
    images = [write_test_image(tmp_path / f"c{i}.png", size=(40 + i, 64), seed=100 + i) for i in range(16)]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)  # PNG signature, garbage body
    files = images[:8] + [bad] + images[8:]
    clients = [_client(tiny_space) for _ in files]
    barrier = threading.Barrier(len(files))

    def call(pair):
        caller, path = pair
        barrier.wait()
        try:
            return caller.predict(handle_file(path), api_name="/predict")[1]
        except AppError as err:
            return err

    with ThreadPoolExecutor(len(files)) as pool:
        answers = list(pool.map(call, zip(clients, files, strict=True)))
    for path, answer in zip(files, answers, strict=True):
        if path == bad:
            assert isinstance(answer, AppError)  # its own error, and nobody else's
        else:
            assert answer["probabilities"] == pytest.approx(one_field(tiny_predictor, path)["probabilities"], abs=1e-6)


def test_predict_batch_rows_and_one_bad_file(client, tiny_predictor, tmp_path):
    good = [write_test_image(tmp_path / f"g{i}.png", seed=30 + i) for i in range(3)]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0" + bytes(200))
    with pytest.raises(ImageError) as expected:
        decode_image(bad)
    files = [good[0], bad, good[1], good[2]]
    rows = client.predict([handle_file(p) for p in files], api_name="/predict_batch")
    assert [row["file"] for row in rows] == [p.name for p in files]
    assert rows[1]["error"] == str(expected.value) and rows[1]["label"] is None
    for path, row in zip(files, rows, strict=True):
        if path == bad:
            continue
        direct = one_field(tiny_predictor, path)
        assert row["error"] is None and row["label"] == direct["label"] and row["name"] == direct["name"]
        assert row["probabilities"] == pytest.approx(direct["probabilities"], abs=1e-6)
        assert row["confidences"] == pytest.approx(direct["confidences"], abs=1e-6)
        assert row["abstained"] is False
    with pytest.raises(AppError, match="No files received"):
        client.predict([], api_name="/predict_batch")


def test_explain_is_the_grad_cam_of_the_top_class(client, tiny_predictor, tmp_path):
    rgb = np.random.default_rng(8).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    path = _write_png(tmp_path / "e.png", rgb)
    plain = _read_output_image(client.predict(handle_file(path), 0.0, api_name="/explain"))
    assert np.array_equal(plain, rgb)  # opacity 0: the image itself, at its own size
    heat_only = _read_output_image(client.predict(handle_file(path), 1.0, api_name="/explain"))
    expected = colourise(GradCam(tiny_predictor.model).heatmap(tiny_predictor.prepare(rgb)).heatmap,
                         size=rgb.shape[:2])
    assert np.abs(heat_only.astype(int) - expected).max() <= 1
    default = _read_output_image(client.predict(handle_file(path), api_name="/explain"))  # opacity 0.45
    assert np.abs(default.astype(int) - (0.55 * rgb + 0.45 * expected)).max() <= 1.5


def test_predict_tiles_on_a_large_image(client, tiny_predictor, tmp_path):
    """1500 x 1500 px, native scale: fields of the input size, background skipped, the verdict is the
    mean of the answered fields' probabilities, and /predict gives the same answer."""
    rng = np.random.default_rng(5)
    rgb = np.full((1500, 1500, 3), 245, np.uint8)  # blank glass
    rgb[128:960, 192:1216] = rng.integers(60, 200, (832, 1024, 3), dtype=np.uint8)
    rgb[1000:1400, 100:500] = (170, 60, 140)
    path = _write_png(tmp_path / "large.png", rgb)
    tile_map, result = client.predict(handle_file(path), "native", api_name="/predict_tiles")
    fields = result["fields"]
    size = tiny_predictor.input_size
    grid = tiling.tile_grid(1500, 1500, tile=size)
    assert fields["tile_size"] == list(size) and fields["grid"] == [24, 24] and fields["tiles_total"] == len(grid)
    mask = tissue_mask(rgb)
    crops = [rgb[y:y + size[0], x:x + size[1]] for _, _, y, x in grid
             if mask[y:y + size[0], x:x + size[1]].mean() >= tiny_predictor.spec.refusal.min_tissue]
    assert fields["tissue_tiles"] == len(crops) and 150 < len(crops) < 400
    assert fields["classified_tiles"] == min(len(crops), fields["max_tiles"]) and fields["capped"]
    assert result["scale"]["mode"] == "native" and result["scale"]["factor"] == 1.0
    assert not result["abstained"] and result["label"] in tiny_predictor.class_ids
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    _, same = client.predict(handle_file(path), "native", api_name="/predict")
    assert {k: same[k] for k in ("label", "probabilities", "fields")} == \
        {k: result[k] for k in ("label", "probabilities", "fields")}
    painted = _read_output_image(tile_map)
    assert painted.shape == (1500, 1500, 3)
    assert np.array_equal(painted[1450:, 1450:], rgb[1450:, 1450:])  # background left as it is


def test_predict_tiles_pads_an_image_thinner_than_a_field(client, tmp_path):
    small = write_test_image(tmp_path / "small.png", size=(30, 200))
    _, tiles = client.predict(handle_file(small), "native", api_name="/predict_tiles")
    _, single = client.predict(handle_file(small), "native", api_name="/predict")
    assert tiles["label"] == single["label"] and tiles["fields"]["classified_tiles"] >= 1


def test_healthz(tiny_space):
    with urllib.request.urlopen(f"{tiny_space}/healthz", timeout=10) as response:
        assert response.status == 200
        assert response.headers["content-type"].startswith("application/json")
        body = json.load(response)
    assert body == {"status": "ok", "model_repo": None, "model_revision": None, "model_name": "tiny-test-model"}


def test_mcp_tools_listed_and_callable(tiny_space, tiny_predictor, tmp_path):
    with urllib.request.urlopen(f"{tiny_space}/gradio_api/mcp/schema", timeout=10) as response:
        tools = {tool["name"]: tool for tool in json.load(response)}
    assert sorted(tools) == ["explain", "predict", "predict_batch", "predict_slide", "predict_tiles"]
    assert tools["predict"]["description"].startswith("Classify one H&E image of any size")
    assert "image" in tools["predict"]["inputSchema"]["required"]
    # A real MCP client session calls the tool; the image goes as a data URL.

    image = write_test_image(tmp_path / "mcp.png", seed=12)
    data_url = "data:image/png;base64," + base64.b64encode(image.read_bytes()).decode()

    async def call() -> str:
        async with streamablehttp_client(f"{tiny_space}/gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                answer = await session.call_tool("predict", {"image": data_url})
                assert not answer.isError, answer.content
                return answer.content[0].text

    text = asyncio.run(call())
    direct = one_field(tiny_predictor, image)
    assert f"'label': '{direct['label']}'" in text and f"{direct['confidence']}" in text


# The bundled model: stain-specific behaviour (abstention on non-tissue, real tiles) -----------


@pytest.mark.slow
def test_non_tissue_images_are_not_answered(hub_space, tmp_path):
    """White glass and pixel noise: /predict, /predict_batch and /predict_tiles all abstain."""
    white = _write_png(tmp_path / "white.png", np.full((224, 224, 3), 255, np.uint8))
    noise = _write_png(tmp_path / "noise.png",
                       np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8))
    client = _client(hub_space)
    for path in (white, noise):
        _, result = client.predict(handle_file(path), api_name="/predict")
        assert result["abstained"] is True and result["abstain_code"] == Reason.COLOUR.value
    rows = client.predict([handle_file(white), handle_file(noise)], api_name="/predict_batch")
    assert [row["abstained"] for row in rows] == [True, True]
    assert all(row["label"] is row["name"] is row["confidence"] is None for row in rows)
    big_noise = _write_png(tmp_path / "big_noise.png",
                           np.random.default_rng(1).integers(0, 256, (672, 672, 3), dtype=np.uint8))
    for scale in ("auto", "native"):
        _, tiles = client.predict(handle_file(big_noise), scale, api_name="/predict_tiles")
        assert tiles["abstained"] is True and tiles["label"] is None and tiles["probabilities"] is None


@pytest.mark.slow
def test_real_tiles_mosaic_through_the_tiling_path(hub_space, lung_data, tmp_path):
    """Real tiles placed on a grid come back tile by tile with the predictor's own answers."""
    predictor = Predictor(HUB_MODEL)
    picks = [sorted((lung_data / cid).glob("*.jpeg"))[7] for cid in predictor.class_ids]
    tiles = [decode_image(p) for p in picks]
    size = predictor.input_size
    assert all(t.shape[:2] == size for t in tiles)
    mosaic = np.full((2 * size[0], 3 * size[1], 3), 250, np.uint8)  # bottom row: blank glass
    for col, tile in enumerate(tiles):
        mosaic[:size[0], col * size[1]:(col + 1) * size[1]] = tile
    tile_map, result = _client(hub_space).predict(handle_file(_write_png(tmp_path / "m.png", mosaic)),
                                                   "native", api_name="/predict_tiles")
    direct = field_rows(predictor, tiles)
    expected = {cid: sum(r["label"] == cid and not r["abstained"] for r in direct) for cid in predictor.class_ids}
    assert result["fields"]["classified_tiles"] == 3 and result["fields"]["tissue_tiles"] == 3
    if not result["abstained"]:
        assert result["fields"]["counts"] == expected
    painted = _read_output_image(tile_map)
    for col, answer in enumerate(direct):  # each tile tinted with its own predicted class colour
        colour = (field_map.ABSTAIN_COLOUR if answer["abstained"] or result["abstained"]
                  else field_map.class_colour(predictor.class_ids.index(answer["label"])))
        cy, cx = size[0] // 2, col * size[1] + size[1] // 2
        blended = 0.55 * mosaic[cy, cx] + 0.45 * np.array(colour)
        assert np.abs(painted[cy, cx] - blended).max() <= 1.5
