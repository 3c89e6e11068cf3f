"""What the speed benchmark sends and starts: tiles, a raw HTTP client, a no-op Space, a cold start.

Example:
    >>> tiles, source = pick_tiles(6, data=Path("../shared/data/lc25000-lung-224"),
    ...                            manifest=Path("training/splits/lc25000-lung-grouped.csv"), out_dir=Path("/tmp/t"))
    >>> with noop_space(Path("/tmp")) as noop:
    ...     raw = RawHttp(noop.url); raw.predict(tiles[0]); raw.close()
    ['ok']
"""
from __future__ import annotations

import contextlib
import csv
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
from gradio_client import handle_file

from imageclf.core.request import DEFAULT_SCALE
from scripts.perf.local_space import SpaceProcess
from scripts.space_batch import call_answer

TILE = 224

NOOP_APP = '''\
"""No-op Gradio app for scripts/perf/space_speed.py: one image endpoint that returns a constant."""
import gradio as gr


def predict(image):
    return "ok"


with gr.Blocks() as demo:
    image = gr.Image(type="filepath")
    out = gr.Textbox()
    gr.on([], predict, inputs=image, outputs=out, api_name="predict")

if __name__ == "__main__":
    demo.queue(default_concurrency_limit=2, max_size=256).launch(max_file_size="25mb")
'''

# The load test's peer: /predict's shape (image + scale in; Label + JSON out) and queue settings
# (concurrency 16, as space/app.py gives /predict), answering a constant without reading the image.
NOOP_PREDICT_APP = '''\
"""No-op peer for scripts/perf/load_test.py: the Space's /predict signature and queue, a constant answer."""
import gradio as gr


def predict(image, scale):
    return {"ok": 1.0}, {"label": "ok"}


with gr.Blocks() as demo:
    image, scale = gr.Image(type="filepath"), gr.Textbox(value="auto")
    label, result = gr.Label(), gr.JSON()
    gr.on([], predict, inputs=[image, scale], outputs=[label, result], api_name="predict",
          concurrency_limit=16, concurrency_id="predict")

if __name__ == "__main__":
    demo.queue(default_concurrency_limit=2, max_size=256).launch(max_file_size="25mb")
'''




def timed(fn: Callable[[], Any]) -> float:
    """Seconds one call of ``fn`` took (``perf_counter``)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# Inputs -----------------------------------------------------------------------------------


def pick_tiles(count: int, *, data: Path, manifest: Path, out_dir: Path) -> tuple[list[Path], str]:
    """``count`` tiles: the test split's tiles spread over the manifest (all classes), or
    generated 224 px JPEGs when the data set is not there. Returns (paths, description)."""
    if data.is_dir() and manifest.is_file():
        with open(manifest, newline="", encoding="utf-8") as handle:
            rows = [row["path"] for row in csv.DictReader(handle) if row.get("split") == "test"]
        files = [data / rel for rel in rows if (data / rel).is_file()]
        if len(files) >= count:
            step = len(files) // count
            return files[::step][:count], f"real test-split tiles from {data.name}"

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(count):
        rng = np.random.default_rng(seed)
        # Smooth pink/purple blobs rather than pure noise: JPEG sizes like real tiles.
        small = rng.integers(0, 256, (14, 14, 3), dtype=np.uint8)
        rgb = cv2.resize(small, (TILE, TILE), interpolation=cv2.INTER_CUBIC)
        rgb = (0.5 * rgb + np.array([110, 60, 120])).clip(0, 255).astype(np.uint8)
        path = out_dir / f"generated-{seed:04d}.jpeg"
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(path)
    return paths, f"generated {TILE} px JPEG tiles ({data} not found)"


# Clients ----------------------------------------------------------------------------------


def gradio_client_call(client: Any, tile: Path) -> Callable[[], Any]:
    def call() -> Any:
        return client.predict(handle_file(str(tile)), api_name="/predict")
    return call


class RawHttp:
    """``/predict`` through Gradio's plain HTTP API, as curl would call it (persistent connection)."""

    def __init__(self, url: str, api_name: str = "predict", *, extra: tuple = ()) -> None:
        self.url = url.rstrip("/")
        self.api_name = api_name
        self.extra = list(extra)   # the endpoint's other inputs (the Space's scale option)
        self.http = httpx.Client(timeout=60.0)

    def predict(self, tile: Path, data: bytes | None = None) -> Any:
        """Upload ``tile``, start the call, read the result stream; returns the output list."""
        content = tile.read_bytes() if data is None else data
        upload = self.http.post(f"{self.url}/gradio_api/upload",
                                files=[("files", (tile.name, content, "application/octet-stream"))])
        upload.raise_for_status()
        path = upload.json()[0]
        started = self.http.post(f"{self.url}/gradio_api/call/{self.api_name}", json={"data": [
            {"path": path, "orig_name": tile.name, "meta": {"_type": "gradio.FileData"}}, *self.extra]})
        started.raise_for_status()
        return call_answer(self.http, f"{self.url}/gradio_api/call/{self.api_name}/{started.json()['event_id']}")

    def close(self) -> None:
        self.http.close()


# Servers ----------------------------------------------------------------------------------


@contextlib.contextmanager
def noop_space(tmp: Path, *, source: str = NOOP_APP) -> Iterator[SpaceProcess]:
    """A no-op Gradio app (``NOOP_APP``, or ``NOOP_PREDICT_APP`` for the load test) on loopback."""
    app = tmp / "noop_app.py"
    app.write_text(source, encoding="utf-8")
    with SpaceProcess(app=app, timeout=300) as space:
        yield space


def large_upload(tiles: list[Path], out: Path, *, side: int = 2000) -> Path:
    """A ``side`` px PNG mosaic of the benchmark's tiles, repeated as needed (a slide region at training scale)."""

    images = [cv2.imread(str(path)) for path in tiles]
    step = images[0].shape[0]
    count = -(-side // step)
    rows = [np.concatenate([images[(r * count + c) % len(images)] for c in range(count)], axis=1)
            for r in range(count)]
    cv2.imwrite(str(out), np.concatenate(rows, axis=0)[:side, :side])
    return out


def cold_start(model_dir: Path, tile: Path, *, timeout: float = 300.0) -> float:
    """Seconds from starting ``python space/app.py`` to its first successful ``/predict`` answer
    (the start-up wait polls every 0.25 s, so the figure may be up to that much high)."""
    data = tile.read_bytes()
    start = time.perf_counter()
    with SpaceProcess(model_dir=model_dir, timeout=timeout) as space:
        raw = RawHttp(space.url, extra=(DEFAULT_SCALE,))
        try:
            raw.predict(tile, data)
        finally:
            raw.close()
        return time.perf_counter() - start
