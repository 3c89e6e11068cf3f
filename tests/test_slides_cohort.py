"""A cohort on a local Dask cluster (slow: worker processes): the same outputs as the serial run, and a
worker killed mid-slide loses nothing: the run completes, every slide is scored exactly once, a rerun
scores nothing."""
from __future__ import annotations

import json
import os
import signal
import threading

import pytest
from distributed import Client

from imageclf.slides.cohort import RUN_LOG, RunOptions, plan_jobs, run_serial
from imageclf.slides.dask_run import PROGRESS_TOPIC, local_cluster, run_dask
from imageclf.slides.slide_model import SlideModel
from imageclf.slides.writers import SLIDE_FILES, SUMMARY
from scripts.perf.synthetic_slides import lung_mosaic, lung_tiles, write_slide
from tests.conftest import HUB_MODEL, require_dataset
from tests.support.slides import tiny_slide_model_folder

pytestmark = pytest.mark.slow
OUTPUTS = (*SLIDE_FILES, SUMMARY)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return tiny_slide_model_folder(tmp_path_factory.mktemp("tiny") / "hub_model", HUB_MODEL)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Four generated lung slides of about 2,000 fields each for the tiny model (a second or two each)."""
    tiles = lung_tiles(require_dataset("external-he") / "lung-tcga")
    folder = tmp_path_factory.mktemp("cohort")
    for index in range(4):
        order = tiles[index:] + tiles[:index]
        write_slide(folder / f"slide{index}.svs", lung_mosaic(order, ["LLLL.", ".LLLL", "LL.LL"]), mpp=0.25)
    return folder


@pytest.fixture(scope="module")
def client():
    with local_cluster(2) as cluster, Client(cluster) as dask:
        yield dask


def comparable(summary: dict) -> dict:
    """A summary without what differs between runs by design (timings)."""
    return {key: value for key, value in summary.items() if key != "timings"}


def test_a_two_worker_cluster_gives_the_serial_outputs(cohort, tiny_folder, client, tmp_path):
    options = RunOptions(model_folder=tiny_folder)
    serial = run_serial(plan_jobs([cohort], tmp_path / "serial"), options,
                        model=SlideModel.from_folder(tiny_folder), progress=False)
    parallel = run_dask(plan_jobs([cohort], tmp_path / "dask"), options, client=client, progress=False)
    assert [r["status"] for r in serial] == ["scored"] * 4 and sorted(r["status"] for r in parallel) == ["scored"] * 4
    assert len({r["worker"] for r in parallel}) == 2                  # both workers took slides
    for index in range(4):
        a, b = tmp_path / "serial" / f"slide{index}", tmp_path / "dask" / f"slide{index}"
        for name in SLIDE_FILES:
            assert (a / name).read_bytes() == (b / name).read_bytes(), f"slide{index}/{name} differs"
        assert comparable(json.loads((a / SUMMARY).read_text())) == comparable(json.loads((b / SUMMARY).read_text()))


def test_a_killed_worker_loses_nothing_and_scores_nothing_twice(cohort, tiny_folder, client, tmp_path):
    pids = client.run(os.getpid)                                       # worker address -> process id
    killed: list[tuple[str, str]] = []
    lock = threading.Lock()

    def kill_on_first_progress(event):
        message = event[1]
        with lock:
            if not killed and message["done"] < message["total"] and message["worker"] in pids:
                killed.append((message["worker"], message["out"]))
                os.kill(pids[message["worker"]], signal.SIGKILL)        # mid-slide: its fields are being scored

    client.subscribe_topic(PROGRESS_TOPIC, kill_on_first_progress)
    out = tmp_path / "out"
    options = RunOptions(model_folder=tiny_folder)
    try:
        records = run_dask(plan_jobs([cohort], out), options, client=client, progress=False)
    finally:
        client.unsubscribe_topic(PROGRESS_TOPIC)
    assert killed, "no worker was killed"
    worker, slide = killed[0]
    assert sorted(r["out"] for r in records) == [f"slide{i}" for i in range(4)]
    assert all(r["status"] == "scored" for r in records)
    assert next(r for r in records if r["out"] == slide)["worker"] != worker     # finished by another process
    for index in range(4):
        assert all((out / f"slide{index}" / name).is_file() for name in OUTPUTS)
    log = [json.loads(line) for line in (out / RUN_LOG).read_text().splitlines()]
    assert sorted(entry["out"] for entry in log if entry["status"] == "scored") == [f"slide{i}" for i in range(4)]
    again = run_dask(plan_jobs([cohort], out), options, client=client, progress=False)
    assert [r["status"] for r in again] == ["skipped"] * 4
