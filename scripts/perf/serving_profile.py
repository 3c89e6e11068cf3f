"""Where the folder path's time goes: CPU per tile by process beside the bare engine, and a cProfile of the Space.

On 2 cores the folder path (``scripts/predict_client.py`` through ``/predict_batch``) is CPU-bound: the
Space, the client and the engine share the cores, so its speed as a ratio to the bare engine is about
the engine's CPU per field over all the CPU one tile costs. :func:`folder_budget` measures both, rounds
interleaved (bare engine in this process, then the folder client): fields/s, their ratio, and CPU ms
per tile of the Space process (all its threads, ended ones included) and of this client process, beside
the bare engine's CPU ms per field. :func:`profiled_space` runs ``space/app.py`` with a cProfile in every
thread timed in that thread's CPU time (so waiting costs nothing), counted from :meth:`ProfiledSpace.mark`
to its stop, and writes one pstats file: which functions, ours or Gradio's, the CPU goes to.

Usage:
    .venv/bin/python -m scripts.perf.serving_profile                         # 256 tiles, 3 rounds
    .venv/bin/python -m scripts.perf.serving_profile --profile runs/space.prof --rounds 1
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import pstats
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil

from imageclf.model.predictor import Predictor
from scripts.perf.local_space import APP, SpaceProcess
from scripts.perf.probes import pick_tiles
from scripts.perf.serving_floors import model_inputs
from scripts.predict_client import classify_files, connect

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "lc25000-lung-224"
MANIFEST = ROOT / "training" / "splits" / "lc25000-lung-grouped.csv"

# Runs space/app.py with a cProfile per thread (thread CPU time). SIGUSR1 marks the start of what counts,
# SIGTERM writes what each function cost since the mark (summed over threads) to PROFILE_OUT and exits.
PROFILED_APP = '''\
import cProfile, marshal, os, runpy, signal, sys, threading, time

APP = {app!r}
profiles, marks, lock = [], {{}}, threading.Lock()


def _start(frame, event, arg):
    sys.setprofile(None)
    profile = cProfile.Profile(time.thread_time)
    with lock:
        profiles.append(profile)
    profile.enable()


def _stats(profile):
    profile.snapshot_stats()
    return dict(profile.stats)


def _mark(signum, frame):
    with lock:
        marks.update({{id(p): _stats(p) for p in profiles}})


def _write(signum, frame):
    merged = {{}}
    with lock:
        for profile in profiles:
            before = marks.get(id(profile), {{}})
            for func, (cc, nc, tt, ct, _) in _stats(profile).items():
                b = before.get(func, (0, 0, 0.0, 0.0, None))
                m = merged.get(func, (0, 0, 0.0, 0.0, {{}}))
                merged[func] = (m[0] + cc - b[0], m[1] + nc - b[1], m[2] + tt - b[2], m[3] + ct - b[3], {{}})
    with open(os.environ["PROFILE_OUT"], "wb") as out:
        marshal.dump({{f: v for f, v in merged.items() if v[1] > 0}}, out)
    os._exit(0)


signal.signal(signal.SIGUSR1, _mark)
signal.signal(signal.SIGTERM, _write)
threading.setprofile(_start)
main = cProfile.Profile(time.thread_time)
profiles.append(main)
os.chdir(os.path.dirname(APP))
sys.path.insert(0, os.path.dirname(APP))
sys.argv = [APP]
main.enable()
runpy.run_path(APP, run_name="__main__")
'''

__all__ = ["ProfiledSpace", "cpu_seconds", "folder_budget", "profiled_space", "top_functions"]


def cpu_seconds(pid: int) -> float:
    """CPU seconds process ``pid`` has used (user + system, every thread it ever ran)."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def folder_budget(client: Any, space_pid: int, predictor: Predictor, tiles: Sequence[Path], *, rounds: int = 3,
                  batch: int = 32, warm: bool = True) -> dict[str, Any]:
    """The folder client against the bare served engine on the same tiles, rounds interleaved, with the CPU
    each costs per tile. Returns the medians over rounds and the rounds themselves. ``warm``: a first
    untimed call of each (the Space's first passes compile)."""
    pixels = model_inputs(tiles, predictor)
    if warm:
        predictor.engine.run(pixels[:batch])
        classify_files(client, list(tiles[:batch]), progress=False)
    here, rows = os.getpid(), []
    for _ in range(rounds):
        cpu, start = cpu_seconds(here), time.perf_counter()
        for begin in range(0, len(pixels), batch):
            predictor.engine.run(pixels[begin:begin + batch])
        bare_s, bare_cpu = time.perf_counter() - start, cpu_seconds(here) - cpu
        space_cpu, cpu, start = cpu_seconds(space_pid), cpu_seconds(here), time.perf_counter()
        answered = classify_files(client, list(tiles), progress=False)
        folder_s = time.perf_counter() - start
        failed = [row["error"] for row in answered if row["error"]]
        if failed:
            raise RuntimeError(f"{len(failed)} tiles failed on the batch path: {failed[0]}")
        n = len(tiles)
        rows.append({"bare_fields_per_s": n / bare_s, "folder_fields_per_s": n / folder_s, "ratio": bare_s / folder_s,
                     "bare_cpu_ms_per_field": 1000 * bare_cpu / n,
                     "space_cpu_ms_per_tile": 1000 * (cpu_seconds(space_pid) - space_cpu) / n,
                     "client_cpu_ms_per_tile": 1000 * (cpu_seconds(here) - cpu) / n, "load": os.getloadavg()[0]})
    medians = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
    return {**medians, "tiles": len(tiles), "rounds": rows}


class ProfiledSpace(SpaceProcess):
    """A :class:`SpaceProcess` under :data:`PROFILED_APP`; :meth:`mark` starts what the profile counts."""

    def mark(self) -> None:
        os.kill(self.pid, signal.SIGUSR1)
        time.sleep(0.5)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            self._proc.wait(timeout=120)


@contextlib.contextmanager
def profiled_space(model_dir: Path, out: Path) -> Iterator[ProfiledSpace]:
    """``space/app.py`` on ``model_dir`` under a per-thread cProfile; the stats land in ``out`` when it stops."""
    with tempfile.TemporaryDirectory(prefix="profiled-space-") as tmp:
        app = Path(tmp) / "profiled_app.py"
        app.write_text(PROFILED_APP.format(app=str(APP)), encoding="utf-8")
        with ProfiledSpace(model_dir=model_dir, app=app, env={"PROFILE_OUT": str(out.resolve())},
                           timeout=300) as space:
            yield space


def top_functions(stats: Path, *, count: int = 25) -> list[dict[str, Any]]:
    """The ``count`` functions with the most CPU of their own (tottime) in a pstats file."""
    data = pstats.Stats(str(stats)).stats   # type: ignore[attr-defined]
    rows = sorted(data.items(), key=lambda item: -item[1][2])[:count]
    return [{"function": f"{Path(file).name}:{line}({name})", "calls": nc, "own_s": round(tt, 3), "total_s": round(ct, 3)}
            for (file, line, name), (_, nc, tt, ct, _) in rows]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "hub_model")
    parser.add_argument("--tiles", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", type=Path, help="also profile the Space (cProfile, thread CPU time) into this file")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="serving-profile-") as tmp:
        tiles, _ = pick_tiles(args.tiles, data=DATA, manifest=MANIFEST, out_dir=Path(tmp) / "tiles")
        predictor = Predictor(args.model)
        space_cm = profiled_space(args.model, args.profile) if args.profile else SpaceProcess(model_dir=args.model,
                                                                                                 timeout=300)
        with space_cm as space:
            client = connect(space.url)
            if args.profile:   # warm before the mark: compiling the first passes is not the path's cost
                predictor.engine.run(model_inputs(tiles[:32], predictor))
                classify_files(client, tiles[:32], progress=False)
                space.mark()
            budget = folder_budget(client, space.pid, predictor, tiles, rounds=args.rounds, warm=not args.profile)
    print(f"served engine: {predictor.runtime}; {budget['tiles']} tiles, {args.rounds} rounds; load {budget['load']:.2f}")
    for key in ("bare_fields_per_s", "folder_fields_per_s", "ratio", "bare_cpu_ms_per_field", "space_cpu_ms_per_tile",
                "client_cpu_ms_per_tile"):
        print(f"{key:24s} {budget[key]:8.2f}")
    if args.profile:
        print(f"\nSpace CPU by function, from the mark to the stop ({args.profile}):")
        for row in top_functions(args.profile):
            print(f"{row['own_s']:8.3f} s own {row['total_s']:8.3f} s total {row['calls']:7d} calls  {row['function']}")
    if args.json:
        args.json.write_text(json.dumps(budget, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
