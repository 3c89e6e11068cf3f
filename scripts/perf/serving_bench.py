"""One command for the serving figures of issue 28, each printed beside its floor from the same run.

Starts the Space on ``--model`` and the two no-op peers (``scripts/perf/probes.py``: a one-image
endpoint, and one with ``/predict``'s signature and queue), then measures, in this order:

1. the served engine against the seed project's compact CNN, in this process, rounds interleaved:
   batch-32 fields/s (goal >= 0.5x) and batch-1 latency (goal <= 1.5x);
2. the folder client (``classify_files`` through ``/predict_batch``) against the bare served engine on
   the same tiles (goal >= 0.8x);
3. ``/predict`` p50 against the no-op endpoint's, calls interleaved (goal <= 1.25x);
4. load, 64 clients x 10 requests: failures (goal 0) and p95 against the no-op peer's under the same
   load (goal <= 1.5x);
5. soak, ``--soak`` requests one by one: RSS growth (goal <= 50 MB) and failures (goal 0);
6. the Space's idle RSS after its first answer, before any Grad-CAM (goal <= 800 MB);
7. cold start to the first ``/predict`` answer against ``--baseline`` (a git revision: its own code and
   model, from a temporary worktree), alternating (goal <= 0.7x);
8. a whole generated slide (``scripts/perf/slide_bench.py``, ``--slide-size`` px a side) end to end
   against the bare engine on the same fields (goal >= 0.9x).

The CPU model and its flags and the load average are printed first: the ratios are what compare
between machines, the absolute figures are this machine's.

Usage (about 15 minutes on 2 cores):
    .venv/bin/python -m scripts.perf.serving_bench --baseline 6ff59ab
    .venv/bin/python -m scripts.perf.serving_bench --quick          # fewer calls and tiles: a smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from imageclf.model.predictor import Predictor
from scripts.perf.local_space import SpaceProcess, rss_bytes
from scripts.perf.probes import NOOP_PREDICT_APP, noop_space, pick_tiles
from scripts.perf.runtimes import cpu
from scripts.perf.serving_floors import (MB, Figure, cold_starts, engine_vs_cnn, folder_vs_engine, load_vs_noop,
                                         model_inputs, predict_vs_noop)
from scripts.perf.soak_test import run_soak
from scripts.predict_client import connect

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "lc25000-lung-224"
MANIFEST = ROOT / "training" / "splits" / "lc25000-lung-grouped.csv"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "hub_model")
    parser.add_argument("--baseline", default=None, help="git revision whose cold start is the floor of item 7")
    parser.add_argument("--tiles", type=int, default=512, help="test tiles for the folder client and the engines")
    parser.add_argument("--calls", type=int, default=200, help="interleaved /predict and no-op calls")
    parser.add_argument("--soak", type=int, default=2000, help="requests of the soak run")
    parser.add_argument("--slide-size", type=int, default=10_000, help="side of the generated slide, px")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 64 tiles, 20 calls, 100 soak, 4000 px")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    args = parser.parse_args(argv)
    if args.quick:
        args.tiles, args.calls, args.soak, args.slide_size = 64, 20, 100, 4000
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    print(f"CPU: {cpu()}; {os.cpu_count()} cores; load average at start {os.getloadavg()[0]:.2f}")

    figures: list[Figure] = []
    checks: list[tuple[str, float, str, float]] = []          # absolute goals: (name, value, op, goal)
    predictor = Predictor(args.model)
    print(f"served engine: {predictor.runtime}")
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as tmp_name:
        tmp = Path(tmp_name)
        tiles, source = pick_tiles(args.tiles, data=DATA, manifest=MANIFEST, out_dir=tmp / "tiles")
        print(f"tiles: {len(tiles)} {source}")
        say("1. engine against the compact CNN ...")
        figures += engine_vs_cnn(predictor, model_inputs(tiles[:128], predictor))
        with SpaceProcess(model_dir=args.model, timeout=300) as space:
            (tmp / "peer").mkdir()
            with noop_space(tmp) as noop, noop_space(tmp / "peer", source=NOOP_PREDICT_APP) as peer:
                client, noop_client = connect(space.url), connect(noop.url)
                say("2. folder client against the bare engine ...")
                figures += folder_vs_engine(client, predictor, tiles)
                say("3. /predict against the no-op endpoint ...")
                figures += predict_vs_noop(client, noop_client, tiles[0], calls=args.calls)
                idle_mb = rss_bytes(space.pid) / MB
                checks.append(("Space RSS after the runs above, no Grad-CAM yet (MB)", idle_mb, "<=", 800))
                say("4. load 64 x 10 ...")
                rows, failures = load_vs_noop(space.url, peer.url, tiles)
                figures += rows
                checks.append(("load 64 x 10: failures", failures, "<=", 0))
                say(f"5. soak {args.soak} ...")
                growth, soak_failures = run_soak(space.url, tiles, requests=args.soak, every=max(1, args.soak // 4),
                                                 warmup=20, pid=space.pid, emit=say)
                checks += [(f"soak {args.soak}: RSS growth (MB)", growth or 0.0, "<=", 50),
                           (f"soak {args.soak}: failures", soak_failures, "<=", 0)]
        say("6-7. cold starts ...")
        rows, cold = cold_starts(tiles[0], baseline=args.baseline)
        figures += rows
        checks.append(("Space idle RSS after its first answer, before any Grad-CAM (MB)", cold["rss_mb"], "<=", 800))
        say("8. a whole slide ...")
        slide_json = tmp / "slide.json"
        subprocess.run([sys.executable, "-m", "scripts.perf.slide_bench", "--size", str(args.slide_size),
                        "--model", str(args.model), "--json", str(slide_json)], cwd=ROOT, check=True)
        slide = json.loads(slide_json.read_text())
        figures.append(Figure(f"whole slide {args.slide_size} px, end to end", slide["end_to_end_fields_per_s"],
                              "fields/s", "bare engine, same fields", slide["engine_fields_per_s"], ">=", 0.9))

    print(f"\nload average at the end {os.getloadavg()[0]:.2f}\n")
    print("| figure | value | floor (same run) | floor value | ratio | goal | met |")
    print("|---|---:|---|---:|---:|---:|---|")
    for f in figures:
        print(f"| {f.name} | {f.value:.2f} {f.unit} | {f.floor_name} | {f.floor:.2f} {f.unit} | {f.ratio:.2f}x | "
              f"{f.op} {f.goal}x | {'met' if f.met else 'MISSED'} |")
    for name, value, op, goal in checks:
        met = value <= goal if op == "<=" else value >= goal
        print(f"| {name} | {value:.1f} | – | – | – | {op} {goal} | {'met' if met else 'MISSED'} |")
    if "baseline_cold_s" in cold:
        print(f"\ncold start {cold['cold_s']:.1f} s against {cold['baseline_cold_s']:.1f} s; idle RSS "
              f"{cold['rss_mb']:.0f} MB against {cold['baseline_rss_mb']:.0f} MB (baseline {args.baseline})")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu(), "runtime": predictor.runtime, "cold": cold,
                                         "figures": [{**f.__dict__, "ratio": f.ratio, "met": f.met} for f in figures],
                                         "checks": checks, "slide": slide}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
