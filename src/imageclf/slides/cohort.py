"""Score a cohort: one slide per task, in this process or on a Dask cluster, nothing lost and nothing twice.

Each slide's outputs go to ``OUT/<slide stem>/`` (:mod:`imageclf.slides.writers`: atomic files,
summary.json last). A slide whose outputs are complete for the same source file is skipped, so a
rerun after a crash finishes only what is missing; a slide that fails gets ``error.json`` with its
sentence and the others are still scored (a rerun tries it again).

Dask (``dask.distributed``): a ``LocalCluster`` of N worker processes by default, or an existing
scheduler's address. The model is loaded once per worker process by a worker plugin
(:class:`ModelPlugin`, set up again on a worker the nanny restarts); a task submitted elsewhere
falls back to a per-process cache. A worker killed mid-slide loses only that slide's unfinished
task, which the scheduler runs again on another worker; as its outputs were never complete, the
slide is still scored exactly once. Each finished slide is recorded in ``OUT/run.jsonl``.

Example:
    >>> jobs = plan_jobs(["slides/"], Path("out"))
    >>> records = run_dask(jobs, RunOptions(model_folder=Path("hub_model")), workers=2)
    >>> [r["status"] for r in records]
    ['scored', 'skipped', 'failed']
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distributed import Client, LocalCluster, as_completed, get_worker
from distributed.diagnostics.plugin import WorkerPlugin
from tqdm import tqdm

from imageclf.core.imaging import IMAGE_SUFFIXES
from imageclf.core.pipeline import Progress
from imageclf.core.request import ScaleRequest
from imageclf.errors import ModelError, first_line
from imageclf.model.predictor import Predictor
from imageclf.settings import SETTINGS
from imageclf.slides.reader import input_kind
from imageclf.slides.slide_model import SlideModel
from imageclf.slides.scoring import score_image, score_slide
from imageclf.slides.writers import outputs_complete, write_failure, write_outputs

SLIDE_SUFFIXES = frozenset({".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif"})
RUN_LOG = "run.jsonl"
PLUGIN_NAME = "imageclf-slide-model"
PROGRESS_TOPIC = "imageclf-slide-progress"
log = logging.getLogger(__name__)

__all__ = ["ModelPlugin", "RunOptions", "SlideJob", "cached_model", "default_workers", "plan_jobs", "process",
           "local_cluster", "run_dask", "run_serial", "score_task", "complete", "RUN_LOG", "SLIDE_SUFFIXES"]


@dataclass(frozen=True)
class RunOptions:
    """What every task of a run shares: the model folder (and its revision), the stated scale (``--mpp``,
    parsed by ``imageclf.core.request.parse_scale``; ``None``: each file's own), a forced level."""

    model_folder: Path
    scale: ScaleRequest | None = None
    level: int | None = None
    revision: str | None = None


@dataclass(frozen=True)
class SlideJob:
    """One input file and the folder its outputs go to."""

    source: Path
    dest: Path


def plan_jobs(inputs: Iterable[str | os.PathLike], out: Path) -> list[SlideJob]:
    """One job per input file (folders: their slide and image files), each with its own output folder
    (the file's stem; stems shared by different files get a short hash of the path)."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                            and p.suffix.lower() in SLIDE_SUFFIXES | IMAGE_SUFFIXES)
        else:
            files.append(path)
    unique = list(dict.fromkeys(p.resolve() for p in files))
    stems = [p.stem for p in unique]
    return [SlideJob(p, out / (p.stem if stems.count(p.stem) == 1 else
                              f"{p.stem}-{hashlib.sha1(str(p).encode()).hexdigest()[:6]}")) for p in unique]


@functools.lru_cache(maxsize=2)
def cached_model(folder: str, revision: str | None = None) -> SlideModel:
    """The model, loaded once per process (a worker plugin calls this at set-up)."""
    return SlideModel.from_predictor(Predictor(folder), revision=revision)


def complete(job: SlideJob) -> bool:
    """True when the job's outputs are complete for its source file as it is now."""
    return job.source.is_file() and outputs_complete(job.dest, job.source)


def process(job: SlideJob, model: SlideModel, options: RunOptions, *, progress: Progress | None = None,
            where: str = "local") -> dict[str, Any]:
    """Score one input into its folder (skipped when complete); a record of what happened."""
    start = time.perf_counter()
    record: dict[str, Any] = {"slide": str(job.source), "out": job.dest.name, "worker": where}
    if complete(job):
        return {**record, "status": "skipped", "seconds": 0.0}
    try:
        if not job.source.is_file():
            raise FileNotFoundError(f"File not found: {job.source}.")
        if input_kind(job.source, max_image_pixels=SETTINGS.max_image_pixels) == "image":
            result = score_image(job.source, model, scale=options.scale)
        else:
            result = score_slide(job.source, model, scale=options.scale, level=options.level, progress=progress)
        write_outputs(result, job.dest)
    except (ModelError, FileNotFoundError) as err:
        sentence = first_line(err)
        write_failure(job.dest, job.source, sentence)
        return {**record, "status": "failed", "error": sentence, "seconds": round(time.perf_counter() - start, 3)}
    summary = json.loads((job.dest / "summary.json").read_text(encoding="utf-8"))
    verdict = summary["verdict"]
    fields = summary.get("fields") or {}
    return {**record, "status": "scored", "kind": summary["kind"], "mpp_source": summary["scale"]["source"],
            "fields": fields.get("classified", 0) if summary["kind"] == "slide" else None,
            "verdict": verdict["label"] or f"refused: {verdict['abstain_code']}",
            "seconds": round(time.perf_counter() - start, 3)}


def run_serial(jobs: list[SlideJob], options: RunOptions, *, model: SlideModel | None = None,
               progress: bool = True) -> list[dict[str, Any]]:
    """Every job in this process, one after the other (``--workers 0``; the Space's path)."""
    records = []
    with tqdm(total=len(jobs), desc="slides", unit="slide", disable=not progress) as bar:
        for job in jobs:
            if complete(job):
                records.append(_logged(job, _skipped(job, "local")))
            else:
                model = model or cached_model(str(options.model_folder), options.revision)
                with _slide_bar(job, progress) as update:
                    records.append(_logged(job, process(job, model, options, progress=update)))
            bar.update()
    return records


class ModelPlugin(WorkerPlugin):
    """Loads the model once in each worker process, when the worker starts (or restarts)."""

    name = PLUGIN_NAME

    def __init__(self, folder: str, revision: str | None = None) -> None:
        self.folder, self.revision = folder, revision
        self.model: SlideModel | None = None

    def setup(self, worker: Any) -> None:
        self.model = cached_model(self.folder, self.revision)


def score_task(job: SlideJob, options: RunOptions) -> dict[str, Any]:
    """One Dask task: one slide, with the worker's model; progress goes to the client as events."""
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

    return process(job, model, options, progress=report, where=worker.address)


def default_workers() -> int:
    """One worker process per four cores (TensorFlow uses several threads per process), at least one."""
    return max(1, (os.cpu_count() or 1) // 4)


def run_dask(jobs: list[SlideJob], options: RunOptions, *, workers: int | None = None, scheduler: str | None = None,
             client: Client | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Every job on a Dask cluster: ``client`` if given, else ``scheduler``'s, else a local one of
    ``workers`` processes. Complete slides are skipped before any task is submitted."""
    records = [_logged(job, _skipped(job, "client")) for job in jobs if complete(job)]
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
            records.append(_logged(job, record))
            if job.dest.name in bars:
                bars.pop(job.dest.name).close()
            bar.update()
        if progress:
            dask.unsubscribe_topic(PROGRESS_TOPIC)
    return records


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


def local_cluster(workers: int) -> LocalCluster:
    """A Dask cluster of ``workers`` processes on this machine, one task at a time each, the cores
    shared between their TensorFlow thread pools."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    env = {"OMP_NUM_THREADS": str(threads), "TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": "1",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                        silence_logs=logging.WARNING, env=env)


def _show(bars: dict[str, tqdm], message: dict[str, Any]) -> None:
    name = message["out"]
    if name not in bars:
        bars[name] = tqdm(total=message["total"], desc=name[:30], unit="field", leave=False)
    bars[name].n = message["done"]
    bars[name].refresh()


@contextlib.contextmanager
def _slide_bar(job: SlideJob, show: bool) -> Iterator[Progress]:
    bar = tqdm(desc=job.dest.name[:30], unit="field", leave=False, disable=not show)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()


def _logged(job: SlideJob, record: dict[str, Any]) -> dict[str, Any]:
    """Append the record to OUT/run.jsonl (one line, one write) and return it."""
    log_path = job.dest.parent / RUN_LOG
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")
    if record["status"] == "failed":
        log.warning("%s: %s", job.source.name, record.get("error"))
    return record


def _skipped(job: SlideJob, where: str) -> dict[str, Any]:
    return {"slide": str(job.source), "out": job.dest.name, "worker": where, "status": "skipped", "seconds": 0.0}


def _token(job: SlideJob) -> str:
    return hashlib.sha1(str(job.source).encode()).hexdigest()[:8]
