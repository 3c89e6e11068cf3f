"""tf.distribute: the default strategy, and two worker processes training together on loopback ports."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from scripts.perf.local_space import free_port
from training.runtime.devices import StrategyError, global_batch_size, is_chief, make_strategy, output_folder
from training.train import TrainConfig, parse_args, train

from .conftest import ROOT


def test_default_strategy_is_one_chief_replica():
    strategy = make_strategy("default")
    assert strategy.num_replicas_in_sync == 1 and is_chief(strategy)
    assert global_batch_size(32, strategy) == 32
    assert parse_args([]).strategy == "default"
    with pytest.raises(StrategyError, match="multi_worker"):
        make_strategy("parameter_server")


def test_only_the_chief_writes_into_the_output_folder(tmp_path):
    with output_folder(tmp_path / "out", chief=True) as folder:
        assert folder == tmp_path / "out" and folder.is_dir()
    with output_folder(tmp_path / "other", chief=False) as folder:
        (folder / "checkpoint.h5").write_bytes(b"x")
        assert folder.parent != tmp_path
    assert not folder.exists() and not (tmp_path / "other").exists()


def test_mirrored_strategy_trains_and_exports_a_single_device_model(tmp_path, tiny_dataset):
    out = tmp_path / "model"
    metrics = train(TrainConfig(allow_dirty=True, data=str(tiny_dataset), out=str(out), input_size=32, work_size=None, epochs=1,
                                batch_size=8, verbose=0, strategy="mirrored"))
    assert metrics["training"]["strategy"] == "mirrored" and metrics["training"]["replicas"] >= 1
    model = keras.saving.load_model(out / "model.keras", compile=False, safe_mode=True)
    assert model.predict(np.zeros((2, 32, 32, 3), np.uint8), verbose=0).shape == (2, 3)


def run_workers(commands: list[list[str]], envs: list[dict], logs: list, *, timeout: float = 420) -> list[int]:
    """Start every worker, wait for all; kill the rest if one hangs past ``timeout``."""
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
             for cmd, env, log in zip(commands, envs, logs, strict=True)]
    deadline = time.monotonic() + timeout
    try:
        return [proc.wait(timeout=max(deadline - time.monotonic(), 1)) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_two_workers_train_one_model_and_only_the_chief_exports_it(tmp_path, tiny_dataset):
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    commands, envs, logs = [], [], []
    for index in range(2):
        (tmp_path / f"tmp{index}").mkdir()
        envs.append({**os.environ, "CUDA_VISIBLE_DEVICES": "", "TMPDIR": str(tmp_path / f"tmp{index}"),
                     "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})})
        # On real machines every worker gets the same --out; distinct folders here show who writes.
        commands.append([sys.executable, "-m", "training.train", "--allow-dirty", "--data", str(tiny_dataset),
                         "--out", str(tmp_path / f"out{index}"), "--strategy", "multi_worker", "--epochs", "1",
                         "--batch-size", "8", "--input-size", "32", "--work-size", "32", "--verbose", "2"])
        logs.append((tmp_path / f"worker{index}.log").open("w"))
    codes = run_workers(commands, envs, logs)
    output = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], [text[-3000:] for text in output]

    chief = tmp_path / "out0"
    metrics = json.loads((chief / "metrics.json").read_text())
    assert metrics["training"]["replicas"] == 2 and metrics["training"]["global_batch_size"] == 16
    # 54 training images in global batches of 16: 4 synchronous steps, each worker taking its half.
    assert "4/4" in output[0] and "4/4" in output[1]
    assert json.loads((chief / "config.json").read_text())["training_run"]["strategy"] == "multi_worker"
    model = keras.saving.load_model(chief / "model.keras", compile=False, safe_mode=True)
    probabilities = model.predict(np.zeros((1, 32, 32, 3), np.uint8), verbose=0)
    np.testing.assert_allclose(probabilities.sum(), 1.0, rtol=1e-5)
    # The other worker wrote nothing into its output folder and removed its temporary one.
    assert not (tmp_path / "out1").exists()
    assert list((tmp_path / "tmp1").iterdir()) == []
