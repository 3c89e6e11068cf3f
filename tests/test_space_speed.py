"""``scripts/perf/space_speed.py`` in a tiny setting: it runs end to end and prints every figure.

Not a timed test: the figures depend on the machine and its load; only their presence and
sign are checked here. The README's "Speed" table comes from a full run.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from scripts.perf.space_speed import GOALS, ROWS, markdown
from scripts.perf.traffic import percentile
from tests.conftest import ROOT
from tests.support.tiny_model import write_tiny_model_folder

NUMBER = r"([-+]?\d+(?:\.\d+)?)"


def test_percentile():
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([5.0], 95) == 5.0
    assert percentile(list(map(float, range(101))), 95) == 95.0


def _report(figures: dict[str, float]) -> dict:
    """A report as ``run`` returns it, with made-up figures (the format, not the speed, is under test)."""
    return {"machine": {"cpu": "Test CPU", "cores": 2, "usable_cores": 2, "load_average_start": [0.5, 0.4, 0.3],
                        "load_average_end": [0.6, 0.5, 0.4], "python": "3.11.2", "gradio": "6.0.0"},
            "model_dir": "hub_model", "tile": "/data/lung_n/lungn1.jpeg", "tiles": "test split", "calls": 3,
            "folder_tiles": 6, "cold_starts": 1, "figures": figures, "samples": {"cold_start_s": [9.5]},
            "goals": {key: {"op": op, "goal": goal, "pass": figures[key] <= goal if op == "<=" else figures[key] >= goal}
                      for key, (op, goal) in GOALS.items()}}


def test_markdown_has_a_row_per_figure_and_a_verdict_per_goal():
    figures = {key: 1.0 + i for i, (key, _, _) in enumerate(ROWS)}
    figures["predict_ratio_p50"] = 9.0  # over its goal: must read as a failure
    text = markdown(_report(figures))
    assert "Test CPU, 2 cores (2 usable)" in text and "0.50 / 0.40 / 0.30 at start" in text and "9.5 s" in text
    for key, what, unit in ROWS:
        row = re.search(rf"^\| {re.escape(what)} \| {NUMBER} {re.escape(unit)} \|(.*)$", text, re.MULTILINE)
        assert row and float(row.group(1)) == pytest.approx(figures[key], abs=0.051), what
        verdict = row.group(2).rstrip(" |").rsplit("| ", 1)[-1]
        if key in GOALS:
            expected = "pass" if _report(figures)["goals"][key]["pass"] else "**fail**"
            assert verdict == expected, row.group(0)
    assert "| `/predict` p50 / no-op p50 | 9.00 x | <= 1.25 x | **fail** |" in text, text


def test_bench_prints_every_figure(tmp_path):
    model = write_tiny_model_folder(tmp_path / "hub_model")
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "scripts.perf.space_speed", "--model-dir", str(model), "--calls", "3",
         "--warmup", "1", "--folder-tiles", "6", "--cold-starts", "1", "--data", str(tmp_path / "no-data"),
         "--json", str(out), "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    assert done.returncode == 0, done.stderr[-4000:]
    text = done.stdout

    machine = re.search(rf"(\d+) cores .*load average \(1/5/15 min\) {NUMBER} / {NUMBER} / {NUMBER} at start", text)
    assert machine and int(machine.group(1)) >= 1, text
    printed = {}
    for key, what, unit in ROWS:
        row = re.search(rf"^\| {re.escape(what)} \| {NUMBER} {re.escape(unit)} \|(.*)$", text, re.MULTILINE)
        assert row, f"no row for {what!r} in:\n{text}"
        printed[key] = float(row.group(1))
        assert printed[key] > 0, row.group(0)
        if key in GOALS:  # a goal and a verdict on the rows that have one
            assert re.search(r"\| (<=|>=) [\d.]+ .*\| (pass|\*\*fail\*\*) \|$", row.group(0)), row.group(0)

    report = json.loads(out.read_text())
    assert set(report["figures"]) == {key for key, _, _ in ROWS}
    assert all(value > 0 for value in report["figures"].values())
    for key, value in printed.items():  # the table shows the saved figures, rounded
        assert value == pytest.approx(report["figures"][key], abs=0.051)
    assert len(report["samples"]["predict_ms"]) == 3 and len(report["samples"]["cold_start_s"]) == 1
    assert report["folder_tiles"] == 6 and "generated" in report["tiles"]
    assert len(report["machine"]["load_average_start"]) == 3
