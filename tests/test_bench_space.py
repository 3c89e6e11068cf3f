"""``scripts/bench_space.py`` in a tiny setting: it runs end to end and prints every figure.

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

from scripts.bench_space import GOALS, ROWS, percentile
from tests.conftest import ROOT
from tests.tiny_model import write_tiny_model_folder

NUMBER = r"([-+]?\d+(?:\.\d+)?)"


def test_percentile():
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([5.0], 95) == 5.0
    assert percentile(list(map(float, range(101))), 95) == 95.0


@pytest.mark.slow
def test_bench_prints_every_figure(tmp_path):
    model = write_tiny_model_folder(tmp_path / "hub_model")
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "scripts.bench_space", "--model-dir", str(model), "--calls", "3",
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
