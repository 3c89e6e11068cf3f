"""A cohort on a Dask cluster: one input per task, the model loaded once per worker, progress as events.

The jobs and the per-input work are :mod:`imageclf.slides.cohort`'s (``plan_jobs``, ``process``);
this module only spreads them over ``dask.distributed``: a ``LocalCluster`` of N worker processes by
default, or an existing scheduler's address. The model is loaded once per worker process by a
worker plugin (:class:`ModelPlugin`, set up again on a worker the nanny restarts); a task submitted
elsewhere falls back to the per-process cache. A worker killed mid-slide loses only that slide's
unfinished task, which the scheduler runs again on another worker; as its outputs were never
complete, the slide is still scored exactly once. Each finished input is recorded in
``OUT/run.jsonl`` by the client.

Example:
    >>> jobs = plan_jobs(["slides/"], Path("out"))                          # imageclf.slides.cohort
    >>> records = run_dask(jobs, RunOptions(model_folder=Path("hub_model")), workers=2)
    >>> [r["status"] for r in records]
    ['scored', 'skipped', 'failed']
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

from distributed import Client, LocalCluster, as_completed, get_worker
from distributed.diagnostics.plugin import WorkerPlugin
from tqdm import tqdm

from imageclf.errors import first_line
from imageclf.slides.cohort import (RunOptions, SlideJob, cached_model, complete, log_record, process,
                                    skipped_record)
from imageclf.slides.slide_model import SlideModel
from imageclf.slides.writers import write_failure

PLUGIN_NAME = "imageclf-slide-model"
PROGRESS_TOPIC = "imageclf-slide-progress"

__all__ = ["ModelPlugin", "default_workers", "local_cluster", "run_dask", "score_task", "PROGRESS_TOPIC"]


class ModelPlugin(WorkerPlugin):
    """Loads the model once in each worker process, when the worker starts (or restarts)."""

    name = PLUGIN_NAME

    def __init__(self, folder: str, revision: str | None = None) -> None:
        self.folder, self.revision = folder, revision
        self.model: SlideModel | None = None

    def setup(self, worker: Any) -> None:
        self.model = cached_model(self.folder, self.revision)


def score_task(job: SlideJob, options: RunOptions) -> dict[str, Any]:
    """One Dask task: one input, with the worker's model; progress goes to the client as events. Returns
    the record only: the summary and heatmap stay in the files, not on the network."""
    worker = get_worker()
    plugin = worker.plugins.get(PLUGIN_NAME)
    model = plugin.model if plugin is not None and plugin.model is not None else cached_model(
        str(options.model_folder), options.revision)
    last = [0.0]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] > 0.5:
            last[0] = now
            worker.log_event(PROGRESS_TOPIC, {"out": job.dest.name, "done": done, "total": total,
                                              "worker": worker.address})

    return process(job, model, options, progress=report, where=worker.address).record


def default_workers() -> int:
    """One worker process per four cores (TensorFlow uses several threads per process), at least one."""
    return max(1, (os.cpu_count() or 1) // 4)


def run_dask(jobs: list[SlideJob], options: RunOptions, *, workers: int | None = None, scheduler: str | None = None,
             client: Client | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Every job on a Dask cluster: ``client`` if given, else ``scheduler``'s, else a local one of
    ``workers`` processes. Complete inputs are skipped before any task is submitted."""
    records = [log_record(job, skipped_record(job, "client"), options) for job in jobs if complete(job)]
    pending = [job for job in jobs if not any(r["out"] == job.dest.name for r in records)]
    if not pending:
        return records
    with _client(client, scheduler, workers or default_workers()) as dask, \
            tqdm(total=len(jobs), initial=len(records), desc="slides", unit="slide", disable=not progress) as bar:
        dask.register_plugin(ModelPlugin(str(options.model_folder), options.revision))
        bars: dict[str, tqdm] = {}
        if progress:
            dask.subscribe_topic(PROGRESS_TOPIC, lambda event: _show(bars, event[1]))
        run = uuid.uuid4().hex[:8]       # keys unique to this run: never an earlier run's result
        futures = {dask.submit(score_task, job, options, key=f"slide-{job.dest.name}-{_token(job)}-{run}",
                               pure=False): job for job in pending}
        for future in as_completed(futures):
            job = futures[future]
            try:
                record = future.result()
            except Exception as err:  # a task that died for a reason of its own (KilledWorker...): its sentence
                sentence = f"{job.source.name} could not be scored: {type(err).__name__}: {first_line(err)}"
                write_failure(job.dest, job.source, sentence)
                record = {"slide": str(job.source), "out": job.dest.name, "status": "failed", "error": sentence}
            records.append(log_record(job, record, options))
            if job.dest.name in bars:
                bars.pop(job.dest.name).close()
            bar.update()
        if progress:
            dask.unsubscribe_topic(PROGRESS_TOPIC)
    return records


def local_cluster(workers: int) -> LocalCluster:
    """A Dask cluster of ``workers`` processes on this machine, one task at a time each, the cores
    shared between their TensorFlow thread pools."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    env = {"OMP_NUM_THREADS": str(threads), "TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": "1",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                        silence_logs=logging.WARNING, env=env)


@contextlib.contextmanager
def _client(client: Client | None, scheduler: str | None, workers: int) -> Iterator[Client]:
    if client is not None:
        yield client
        return
    if scheduler:
        with Client(scheduler) as remote:
            yield remote
        return
    with local_cluster(workers) as cluster, Client(cluster) as local:
        yield local


def _show(bars: dict[str, tqdm], message: dict[str, Any]) -> None:
    name = message["out"]
    if name not in bars:
        bars[name] = tqdm(total=message["total"], desc=name[:30], unit="field", leave=False)
    bars[name].n = message["done"]
    bars[name].refresh()


def _token(job: SlideJob) -> str:
    return hashlib.sha1(str(job.source).encode()).hexdigest()[:8]
