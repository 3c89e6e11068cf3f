"""Peer benchmark: peers' contract, the time-budget callback, and a tiny end-to-end run."""
from __future__ import annotations

import json
import math
import time

import keras
import numpy as np
import pytest

from training.evaluation.compare_peers import TimeBudget, main
from training.evaluation.peer_report import COLUMNS
from training.models.peers import PEERS, build_peer, peer_b_work_size
from training.train import TrainConfig, train

MAX_EPOCHS = 30


@pytest.mark.parametrize("key", sorted(PEERS))
def test_peers_take_uint8_and_return_probabilities(key):
    model = build_peer(key, num_classes=3, input_size=32)
    assert model.input.dtype == "uint8" and model.input.shape[1:] == (32, 32, 3)
    probs = np.asarray(model(np.zeros((2, 32, 32, 3), np.uint8), training=False))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert peer_b_work_size(224) == 256 and peer_b_work_size(64) == 73


def test_time_budget_stops_mid_epoch():
    # One epoch of 2,000 batches of a trivial model takes seconds; a 0.3 s budget ends it far earlier.
    x = np.zeros((2000, 4), np.float32)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    budget = TimeBudget(0.3)
    started = time.monotonic()
    model.fit(x, x[:, :1], batch_size=1, epochs=3, callbacks=[budget], verbose=0)
    assert budget.stopped and 0 < budget.batches < 2000
    assert time.monotonic() - started < 5


@pytest.fixture(scope="module")
def tiny_benchmark(tiny_dataset, tmp_path_factory):
    """Our model trained briefly on the tiny dataset, then the benchmark with a 0.6 s peer budget."""
    tmp = tmp_path_factory.mktemp("benchmark")
    ours = tmp / "ours"
    train(TrainConfig(allow_dirty=True, data=str(tiny_dataset), out=str(ours), input_size=32, work_size=None, epochs=2,
                      batch_size=16, verbose=0))
    report = main([
        "--data", str(tiny_dataset), "--manifest", str(ours / "split_manifest.csv"), "--ours", str(ours),
        "--peers", "a,b", "--input-size", "32", "--budget-minutes", "0.01", "--max-epochs", str(MAX_EPOCHS),
        "--batch-size", "4", "--latency-runs", "10", "--throughput-runs", "2", "--verbose", "0",
        "--out", str(tmp / "out"),
    ])
    return report, tmp / "out"


def test_benchmark_writes_complete_table_and_json(tiny_benchmark, capsys):
    report, out = tiny_benchmark
    assert json.loads((out / "benchmark.json").read_text())["models"] == json.loads(json.dumps(report["models"]))
    rows = report["models"]
    assert [r["name"] for r in rows] == ["ours (ours)", "peer a", "peer b"]
    for row in rows:
        for key in COLUMNS:
            assert isinstance(row[key], (int, float)) and math.isfinite(row[key]), (row["name"], key)
            assert math.isfinite(row["ratio_to_ours"][key])
        assert 0 <= row["accuracy"] <= 1 and row["latency_ms_p95"] >= row["latency_ms_median"] > 0
    assert all(value == 1.0 for value in rows[0]["ratio_to_ours"].values())
    for row in rows[1:]:
        assert row["ratio_to_ours"]["params"] == pytest.approx(row["params"] / rows[0]["params"], rel=1e-3)
    table = (out / "benchmark.md").read_text()
    for title, _ in COLUMNS.values():
        assert title in table
    assert table.count("| peer a |") == 2 and "default TF thread pools" in table
    # Ours was re-evaluated on the very test split it recorded when it was trained.
    recorded = json.loads((out.parent / "ours" / "metrics.json").read_text())
    assert report["split_sizes"]["test"] == recorded["num_images"]
    assert rows[0]["accuracy"] == pytest.approx(recorded["accuracy"], abs=1e-4)


def test_budget_stops_peer_training(tiny_benchmark):
    report, _ = tiny_benchmark
    for row in report["models"][1:]:
        # Budget 0.6 s: the first epoch (with graph tracing) overruns it, so fit stops long before MAX_EPOCHS.
        assert row["stopped_by_budget"] and row["epochs_run"] < MAX_EPOCHS
        assert row["train_seconds"] < 20 and row["best_epoch"] is not None
