"""The measurements of ``serving_bench``: each figure taken beside its floor, in the same run.

Every function returns :class:`Figure` rows: the figure, the floor it is compared with (measured
here, interleaved where both can run at once), their ratio and the goal. Nothing here prints.

Example:
    >>> rows = engine_vs_cnn(predictor, tiles, rounds=5)
    >>> rows[0].name, round(rows[0].ratio, 2)
    ('served engine, batch-32 fields/s', 0.51)
"""
from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imageclf.core.imaging import decode_image, to_model_input
from imageclf.model.predictor import Predictor
from scripts.perf.load_test import run_load
from scripts.perf.local_space import SpaceProcess, rss_bytes
from scripts.perf.probes import RawHttp, gradio_client_call, timed
from scripts.perf.traffic import percentile
from scripts.predict_client import classify_files

ROOT = Path(__file__).resolve().parents[2]
MB = 1024 * 1024

__all__ = ["Figure", "engine_vs_cnn", "folder_vs_engine", "predict_vs_noop", "load_vs_noop", "cold_starts",
           "bare_engine_rate", "model_inputs"]


@dataclass(frozen=True)
class Figure:
    """One figure beside its floor: ``ratio`` = value / floor; ``goal`` met when ``ratio op goal``."""

    name: str
    value: float
    unit: str
    floor_name: str
    floor: float
    op: str              # "<=" or ">="
    goal: float

    @property
    def ratio(self) -> float:
        return self.value / self.floor if self.floor else float("nan")

    @property
    def met(self) -> bool:
        return self.ratio <= self.goal if self.op == "<=" else self.ratio >= self.goal


def model_inputs(paths: Sequence[Path], predictor: Predictor) -> np.ndarray:
    """The tiles as the engine takes them: decoded, at the model's input size, uint8."""
    return np.stack([to_model_input(decode_image(path), size=predictor.input_size) for path in paths])


def bare_engine_rate(predictor: Predictor, pixels: np.ndarray, *, batch: int = 32) -> float:
    """Fields/s of the served engine alone (``engine.run``) over ``pixels`` in batches of ``batch``."""
    predictor.engine.run(pixels[:batch])
    start = time.perf_counter()
    for begin in range(0, len(pixels), batch):
        predictor.engine.run(pixels[begin:begin + batch])
    return len(pixels) / (time.perf_counter() - start)


def engine_vs_cnn(predictor: Predictor, pixels: np.ndarray, *, rounds: int = 7, batch1: int = 20) -> list[Figure]:
    """The served engine against the seed project's compact CNN (``training/models/peers.py`` peer B, Keras,
    random weights: speed only) in this process, rounds interleaved: batch-32 fields/s and batch-1 ms."""
    from training.export.precision_measure import speed   # deferred: Keras and the training code, only here
    from training.models.peers import peer_b   # deferred: Keras, only for this comparison

    cnn = peer_b(len(predictor.class_ids), input_size=predictor.input_size[0])
    timed_rounds = speed({"engine": predictor.engine.run, "cnn": cnn.predict_on_batch}, pixels,
                         rounds=rounds, batch1=batch1)
    fps = {name: figures["batch32_fields_s"] for name, figures in timed_rounds.items()}
    ms = {name: figures["batch1_ms"] for name, figures in timed_rounds.items()}
    return [Figure("served engine, batch-32 fields/s", fps["engine"], "fields/s", "compact CNN batch-32", fps["cnn"],
                   ">=", 0.5),
            Figure("served engine, batch-1 latency", ms["engine"], "ms", "compact CNN batch-1", ms["cnn"], "<=", 1.5)]


def folder_vs_engine(client: object, predictor: Predictor, paths: Sequence[Path]) -> list[Figure]:
    """The folder client (``classify_files``: ``/predict_batch``) against the bare served engine on the
    same tiles, the engine timed right after (median of 3 passes)."""
    start = time.perf_counter()
    rows = classify_files(client, list(paths), progress=False)
    folder = len(paths) / (time.perf_counter() - start)
    failed = [row for row in rows if row["error"]]
    if failed:
        raise RuntimeError(f"{len(failed)} tiles failed on the batch path: {failed[0]['error']}")
    pixels = model_inputs(paths, predictor)
    engine = statistics.median(bare_engine_rate(predictor, pixels) for _ in range(3))
    return [Figure("folder client via /predict_batch", folder, "fields/s", "bare served engine, same tiles", engine,
                   ">=", 0.8)]


def predict_vs_noop(client: object, noop_client: object, tile: Path, *, calls: int = 200) -> list[Figure]:
    """``/predict`` p50 against the no-op endpoint's, calls interleaved one for one."""
    real, noop = gradio_client_call(client, tile), gradio_client_call(noop_client, tile)
    for _ in range(5):
        real(), noop()
    real_s, noop_s = [], []
    for _ in range(calls):
        real_s.append(timed(real))
        noop_s.append(timed(noop))
    return [Figure("/predict p50 (gradio_client)", 1000 * percentile(real_s, 50), "ms", "no-op endpoint p50",
                   1000 * percentile(noop_s, 50), "<=", 1.25)]


def load_vs_noop(url: str, noop_url: str, images: Sequence[Path], *, clients: int = 64,
                 requests: int = 10) -> tuple[list[Figure], int]:
    """``clients`` x ``requests`` concurrent ``/predict`` calls on the Space, then on the no-op peer of the
    same signature and queue; p95 against the peer's p95, and the Space's failures."""
    space = run_load(url, images, clients=clients, requests=requests)
    peer = run_load(noop_url, images, clients=clients, requests=requests)
    for name, run in (("Space", space), ("no-op peer", peer)):   # the p95 with what explains it: throughput
        print(f"load {clients} x {requests}, {name}: {run.total / run.wall_s:.1f} requests/s, p50 "
              f"{percentile(run.latencies, 50):.2f} s, p95 {percentile(run.latencies, 95):.2f} s, "
              f"{len(run.failures)} failures")
    figure = Figure(f"load {clients} x {requests}: /predict p95", percentile(space.latencies, 95), "s",
                    "no-op peer p95, same load", percentile(peer.latencies, 95), "<=", 1.5)
    return [figure], len(space.failures)


def cold_start(app: Path, tile: Path, env: dict[str, str]) -> tuple[float, float]:
    """Seconds from starting ``app`` to its first ``/predict`` answer, and its RSS (MB) when idle after."""
    data = tile.read_bytes()
    start = time.perf_counter()
    with SpaceProcess(app=app, env=env, timeout=300) as space:
        raw = RawHttp(space.url, extra=("auto",))
        try:
            raw.predict(tile, data)
        finally:
            raw.close()
        seconds = time.perf_counter() - start
        time.sleep(2.0)
        return seconds, rss_bytes(space.pid) / MB


def cold_starts(tile: Path, *, baseline: str | None, repeats: int = 3) -> tuple[list[Figure], dict[str, float]]:
    """Cold start (and idle RSS after one answer) of this checkout's Space and, when ``baseline`` names a git
    revision, of that revision's Space (its own code and hub_model/, from a temporary worktree), alternating."""
    apps = {"this checkout": (ROOT / "space" / "app.py", {})}
    with tempfile.TemporaryDirectory(prefix="bench-baseline-") as tmp:
        if baseline:
            subprocess.run(["git", "worktree", "add", "--detach", tmp, baseline], cwd=ROOT, check=True,
                           capture_output=True)
            apps[f"baseline {baseline}"] = (Path(tmp) / "space" / "app.py", {"PYTHONPATH": str(Path(tmp) / "src")})
        try:
            seconds: dict[str, list[float]] = {name: [] for name in apps}
            rss: dict[str, list[float]] = {name: [] for name in apps}
            for _ in range(repeats):
                for name, (app, env) in apps.items():
                    s, mb = cold_start(app, tile, env)
                    seconds[name].append(s)
                    rss[name].append(mb)
        finally:
            if baseline:
                subprocess.run(["git", "worktree", "remove", "--force", tmp], cwd=ROOT, capture_output=True)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    idle = {name: statistics.median(values) for name, values in rss.items()}
    rows = []
    if baseline:
        rows.append(Figure("cold start to first /predict", medians["this checkout"], "s",
                           f"baseline {baseline}, same run", medians[f"baseline {baseline}"], "<=", 0.7))
    return rows, {"cold_s": medians["this checkout"], "rss_mb": idle["this checkout"],
                  **({"baseline_cold_s": medians[f"baseline {baseline}"],
                      "baseline_rss_mb": idle[f"baseline {baseline}"]} if baseline else {})}
