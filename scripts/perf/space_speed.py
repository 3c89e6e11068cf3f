"""Speed benchmark of the Space on this machine: prints a Markdown table (not a timed test).

Starts ``python space/app.py`` on ``--model-dir`` (default ``hub_model``) and, for comparison,
a no-op Gradio app with one image endpoint (same Gradio, same queue settings, returns a
constant string), both on 127.0.0.1, and measures:

1. ``/predict`` through ``gradio_client``: p50 / p95 of ``--calls`` calls with one 224 px tile,
   and the same on the no-op endpoint (calls alternate between the two, so load from other jobs
   hits both alike); the ratio of the p50s says what the model and the app add.
2. The raw HTTP API with a persistent ``httpx`` client: ``POST /gradio_api/upload``, then
   ``POST /gradio_api/call/predict`` and ``GET /gradio_api/call/predict/{event_id}`` (server-sent
   events until ``event: complete``): p50 / p95 of the three together.
3. Folder scoring with ``scripts/predict_client.py``: ``--folder-tiles`` tiles (real tiles of the
   grouped manifest's test split when ``--data`` exists, else generated ones) through the batch
   path (``classify_files``: ``/predict_batch``) and one ``/predict`` call per tile; tiles/s.
4. Cold start: a fresh Space process to its first successful ``/predict`` answer (the model is
   already on disk), ``--cold-starts`` times; the median.

Usage:
    ```bash
    $ python -m scripts.perf.space_speed                        # bundled model, 100 calls, 300 tiles, 3 cold starts
    $ python -m scripts.perf.space_speed --json runs/bench.json # also save the figures
    $ python -m scripts.perf.space_speed --model-dir /tmp/m --calls 3 --folder-tiles 6 --cold-starts 1
    ```
Machine facts (cores, load average at start and end) are printed with the table: the figures
are only comparable between runs on the same, equally loaded machine.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from imageclf.core.request import DEFAULT_SCALE
from scripts.perf.local_space import SpaceProcess
from scripts.perf.probes import RawHttp, cold_start, gradio_client_call, large_upload, noop_space, pick_tiles, timed
from scripts.perf.traffic import has_label, percentile
from scripts.predict_client import classify_file, classify_files, connect

ROOT = Path(__file__).resolve().parents[2]

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "lc25000-lung-224"
DEFAULT_MANIFEST = ROOT / "training" / "splits" / "lc25000-lung-grouped.csv"
GOALS = {  # figure key -> (comparison, goal)
    "predict_ratio_p50": ("<=", 1.25),
    "raw_http_p50_ms": ("<=", 40.0),
    "folder_batch_tiles_per_s": (">=", 100.0),   # the fast-runtime issue (19) raised it from 50
    "cold_start_median_s": ("<=", 20.0),       # a 30 MB DenseNet121 loads in the budget of the lung issue
    "large_upload_median_s": ("<=", 2.0),
}
ROWS = (  # (key, what, unit), in print order
    ("predict_p50_ms", "`/predict` via gradio_client, p50", "ms"),
    ("predict_p95_ms", "`/predict` via gradio_client, p95", "ms"),
    ("noop_p50_ms", "no-op image endpoint via gradio_client, p50", "ms"),
    ("noop_p95_ms", "no-op image endpoint via gradio_client, p95", "ms"),
    ("predict_ratio_p50", "`/predict` p50 / no-op p50", "x"),
    ("raw_http_p50_ms", "raw HTTP upload + call + result, p50", "ms"),
    ("raw_http_p95_ms", "raw HTTP upload + call + result, p95", "ms"),
    ("raw_http_noop_p50_ms", "raw HTTP on the no-op endpoint, p50", "ms"),
    ("folder_batch_tiles_per_s", "folder scoring, batch path (`/predict_batch`)", "tiles/s"),
    ("folder_single_tiles_per_s", "folder scoring, one `/predict` per tile", "tiles/s"),
    ("cold_start_median_s", "cold start to first `/predict` answer, median", "s"),
    ("large_upload_median_s", "a 2000 x 2000 px PNG through `/predict`, end to end, median of 3", "s"),
)

# The benchmark ----------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in _read_lines("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor() or "unknown CPU")

    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "load_average_start": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "gradio": importlib.metadata.version("gradio")}


def run(args: argparse.Namespace) -> dict[str, Any]:
    info = machine()
    figures: dict[str, float] = {}
    samples: dict[str, list[float]] = {}
    say = (lambda text: print(text, file=sys.stderr, flush=True)) if not args.quiet else (lambda text: None)
    model_dir = Path(args.model_dir)
    with tempfile.TemporaryDirectory(prefix="bench_space_") as tmp_name:
        tmp = Path(tmp_name)
        tiles, tiles_from = pick_tiles(max(args.folder_tiles, 1), data=Path(args.data),
                                       manifest=Path(args.manifest), out_dir=tmp / "tiles")
        tile = tiles[0]
        say(f"bench: starting the Space on {model_dir} and the no-op app ...")
        with SpaceProcess(model_dir=model_dir, timeout=300) as space, noop_space(tmp) as noop:
            client, noop_client = connect(space.url), connect(noop.url)
            real_call, noop_call = gradio_client_call(client, tile), gradio_client_call(noop_client, tile)
            for _ in range(args.warmup):
                real_call(), noop_call()
            say(f"bench: 1. gradio_client, {args.calls} calls each ...")
            real_s, noop_s = [], []
            for _ in range(args.calls):  # alternate, so a burst of outside load hits both
                real_s.append(timed(real_call))
                noop_s.append(timed(noop_call))
            samples["predict_ms"], samples["noop_ms"] = _ms(real_s), _ms(noop_s)
            figures.update(predict_p50_ms=percentile(samples["predict_ms"], 50),
                           predict_p95_ms=percentile(samples["predict_ms"], 95),
                           noop_p50_ms=percentile(samples["noop_ms"], 50),
                           noop_p95_ms=percentile(samples["noop_ms"], 95))
            figures["predict_ratio_p50"] = figures["predict_p50_ms"] / figures["noop_p50_ms"]

            say(f"bench: 2. raw HTTP, {args.calls} calls each ...")
            raw, raw_noop = RawHttp(space.url, extra=(DEFAULT_SCALE,)), RawHttp(noop.url)
            try:
                data = tile.read_bytes()
                answer = raw.predict(tile, data)
                if not has_label(answer):
                    raise RuntimeError(f"/predict over raw HTTP answered {str(answer)[:200]}")
                for _ in range(args.warmup):
                    raw.predict(tile, data), raw_noop.predict(tile, data)
                raw_s, raw_noop_s = [], []
                for _ in range(args.calls):
                    raw_s.append(timed(lambda: raw.predict(tile, data)))
                    raw_noop_s.append(timed(lambda: raw_noop.predict(tile, data)))
            finally:
                raw.close(), raw_noop.close()
            samples["raw_http_ms"], samples["raw_http_noop_ms"] = _ms(raw_s), _ms(raw_noop_s)
            figures.update(raw_http_p50_ms=percentile(samples["raw_http_ms"], 50),
                           raw_http_p95_ms=percentile(samples["raw_http_ms"], 95),
                           raw_http_noop_p50_ms=percentile(samples["raw_http_noop_ms"], 50))

            say(f"bench: 3. folder scoring, {len(tiles)} tiles, batch path then one call per tile ...")
            start = time.perf_counter()
            rows = classify_files(client, tiles, progress=False)
            batch_s = time.perf_counter() - start
            failed = [row for row in rows if row["error"]]
            if failed:
                raise RuntimeError(f"{len(failed)} tiles failed on the batch path: {failed[0]['error']}")
            start = time.perf_counter()
            for path in tiles:
                classify_file(client, path)
            single_s = time.perf_counter() - start
            figures["folder_batch_tiles_per_s"] = len(tiles) / batch_s
            figures["folder_single_tiles_per_s"] = len(tiles) / single_s

            say("bench: 4. a 2000 x 2000 px upload (real tiles at training scale: the most fields) ...")
            large = large_upload(tiles, tmp / "large.png")
            large_call = gradio_client_call(client, large)
            large_call()   # warm
            samples["large_upload_s"] = [timed(large_call) for _ in range(3)]
            figures["large_upload_median_s"] = percentile(samples["large_upload_s"], 50)
            client.close()
            noop_client.close()

        say(f"bench: 4. cold start x {args.cold_starts} ...")
        samples["cold_start_s"] = [cold_start(model_dir, tile) for _ in range(args.cold_starts)]
        figures["cold_start_median_s"] = statistics.median(samples["cold_start_s"])
    info["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    return {"machine": info, "model_dir": str(model_dir), "tile": str(tile), "tiles": tiles_from,
            "calls": args.calls, "folder_tiles": len(tiles), "cold_starts": args.cold_starts,
            "figures": figures, "goals": {key: {"op": op, "goal": goal, "pass": _passes(figures[key], op, goal)}
                                          for key, (op, goal) in GOALS.items()},
            "samples": samples}


def markdown(report: dict[str, Any]) -> str:
    """The figures as a Markdown table, plus the machine and the run's settings."""
    m, figures = report["machine"], report["figures"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable); load average "
             f"(1/5/15 min) {_load(m['load_average_start'])} at start, {_load(m['load_average_end'])} at end; "
             f"Python {m['python']}, Gradio {m['gradio']}.",
             f"Model: `{report['model_dir']}`; tile: `{Path(report['tile']).name}` ({report['tiles']}); "
             f"{report['calls']} calls per latency figure; {report['folder_tiles']} tiles; "
             f"{report['cold_starts']} cold start(s): "
             + ", ".join(f"{s:.1f} s" for s in report["samples"]["cold_start_s"]) + ".",
             "", "| measurement | value | goal | result |", "| --- | ---: | --- | --- |"]
    for key, what, unit in ROWS:
        value = figures[key]
        shown = f"{value:.2f} {unit}" if unit == "x" else f"{value:.1f} {unit}"
        goal = report["goals"].get(key)
        goal_text = f"{goal['op']} {goal['goal']:g} {unit}" if goal else ""
        result = ("pass" if goal["pass"] else "**fail**") if goal else ""
        lines.append(f"| {what} | {shown} | {goal_text} | {result} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.perf.space_speed", description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", default=str(ROOT / "hub_model"), help="model folder (default: hub_model)")
    parser.add_argument("--calls", type=int, default=100, help="calls per latency figure (default: 100)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls first (default: 5)")
    parser.add_argument("--folder-tiles", type=int, default=300, help="tiles for folder scoring (default: 300)")
    parser.add_argument("--cold-starts", type=int, default=3, help="cold starts, median reported (default: 3)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help=f"data set root (default: {DEFAULT_DATA})")
    parser.add_argument("--manifest", default=str(DEFAULT_MANIFEST), help="split manifest with a split column")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the figures and samples as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    if min(args.calls, args.folder_tiles, args.cold_starts) < 1 or args.warmup < 0:
        parser.error("--calls, --folder-tiles and --cold-starts must be at least 1, --warmup at least 0")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    report = run(args)
    print(markdown(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


def _ms(seconds: Sequence[float]) -> list[float]:
    return [s * 1000 for s in seconds]


def _passes(value: float, op: str, goal: float) -> bool:
    return value <= goal if op == "<=" else value >= goal


def _load(values: Sequence[float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []


if __name__ == "__main__":
    sys.exit(main())
