"""Score a cohort's inputs, each into its own folder: the jobs, one job scored, and the serial run.

Each input's outputs go to ``OUT/<slide stem>/`` (:mod:`imageclf.slides.writers`: atomic files,
summary.json last). An input whose outputs are complete for the same source file is skipped, so a
rerun after a crash finishes only what is missing; one that fails gets ``error.json`` with its
sentence and the others are still scored (a rerun tries it again). Each finished input of every run
is a line of ``OUT/run.jsonl``.

:func:`process` is the one "score into a folder" function: the serial run (:func:`run_serial`, the
command line's ``--workers 0``), every Dask task (:mod:`imageclf.slides.dask_run`) and the Space's
Slide tab call it for each input. It returns a :class:`JobOutcome`: the small run.jsonl record, and
for a scored input the summary.json it wrote and the heatmap it drew, so a caller that shows them
reads nothing back from disk.

Every summary.json and run.jsonl line carries the run metadata (:func:`run_provenance`: code version,
package versions, the model's name, revision or commit, and sha256), computed once per process and
model: the sha256 reads the whole weights file.

Example:
    >>> jobs = plan_jobs(["slides/"], Path("out"))
    >>> records = run_serial(jobs, RunOptions(model_folder=Path("hub_model")))
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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from imageclf.core.imaging import IMAGE_SUFFIXES
from imageclf.core.pipeline import Progress
from imageclf.core.scale import ScaleRequest
from imageclf.errors import ModelError, first_line
from imageclf.model.config import read_config
from imageclf.model.predictor import Predictor
from imageclf.provenance import run_metadata
from imageclf.settings import SETTINGS
from imageclf.slides.heatmap import render_heatmap
from imageclf.slides.reader import input_kind
from imageclf.slides.scoring import score_image, score_slide
from imageclf.slides.slide_model import SlideModel, local_revision
from imageclf.slides.writers import outputs_complete, write_failure, write_outputs

SLIDE_SUFFIXES = frozenset({".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif"})
RUN_LOG = "run.jsonl"
log = logging.getLogger(__name__)

__all__ = ["JobOutcome", "RunOptions", "SlideJob", "cached_model", "complete", "log_record", "plan_jobs", "process",
           "run_provenance", "run_serial", "skipped_record", "RUN_LOG", "SLIDE_SUFFIXES"]


@dataclass(frozen=True)
class RunOptions:
    """What every task of a run shares: the model folder, its revision (a Hub commit; ``None``: the local
    ``sha256:`` name) and Hub repo (``None``: a local folder), the stated scale (``--mpp``, parsed by
    ``imageclf.core.request.parse_scale``; ``None``: each file's own), a forced level."""

    model_folder: Path
    scale: ScaleRequest | None = None
    level: int | None = None
    revision: str | None = None
    repo: str | None = None


@dataclass(frozen=True)
class SlideJob:
    """One input file and the folder its outputs go to."""

    source: Path
    dest: Path


@dataclass(frozen=True, eq=False)
class JobOutcome:
    """What scoring one input left: its run.jsonl ``record`` (small: it crosses the Dask network), and for
    an input scored here the ``summary`` written as summary.json and the ``heatmap`` drawn (slides only)."""

    record: dict[str, Any]
    summary: dict[str, Any] | None = None
    heatmap: np.ndarray | None = None


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


def run_provenance(options: RunOptions) -> dict[str, Any]:
    """The run metadata of ``options``' model (``imageclf.provenance.run_metadata``: code version, package
    versions, the model's name, repo, revision and sha256), computed once per process and model."""
    return _provenance(str(Path(options.model_folder).resolve()), options.revision, options.repo)


def complete(job: SlideJob) -> bool:
    """True when the job's outputs are complete for its source file as it is now."""
    return job.source.is_file() and outputs_complete(job.dest, job.source)


def process(job: SlideJob, model: SlideModel, options: RunOptions, *, progress: Progress | None = None,
            where: str = "local") -> JobOutcome:
    """Score one input into its folder (skipped when complete; ``error.json`` when it cannot be scored)."""
    start = time.perf_counter()
    record: dict[str, Any] = {"slide": str(job.source), "out": job.dest.name, "worker": where}
    if complete(job):
        return JobOutcome(skipped_record(job, where))
    try:
        if not job.source.is_file():
            raise FileNotFoundError(f"File not found: {job.source}.")
        heatmap = None
        if input_kind(job.source, max_image_pixels=SETTINGS.max_image_pixels) == "image":
            result = score_image(job.source, model, scale=options.scale)
        else:
            result = score_slide(job.source, model, scale=options.scale, level=options.level, progress=progress)
            heatmap = render_heatmap(result)    # drawn once: written as heatmap.png and shown by the Space
        summary = write_outputs(result, job.dest, heatmap=heatmap, provenance=run_provenance(options))
    except (ModelError, FileNotFoundError) as err:
        sentence = first_line(err)
        write_failure(job.dest, job.source, sentence)
        return JobOutcome({**record, "status": "failed", "error": sentence,
                           "seconds": round(time.perf_counter() - start, 3)})
    verdict = summary["verdict"]
    scored = {"status": "scored", "kind": summary["kind"], "mpp_source": summary["scale"]["source"],
              "fields": summary["fields"]["classified"] if summary["kind"] == "slide" else None,
              "verdict": verdict["label"] or f"refused: {verdict['abstain_code']}",
              "seconds": round(time.perf_counter() - start, 3)}
    return JobOutcome({**record, **scored}, summary, heatmap)


def run_serial(jobs: list[SlideJob], options: RunOptions, *, model: SlideModel | None = None,
               progress: bool = True) -> list[dict[str, Any]]:
    """Every job in this process, one after the other (the command line's ``--workers 0``)."""
    records = []
    with tqdm(total=len(jobs), desc="slides", unit="slide", disable=not progress) as bar:
        for job in jobs:
            if complete(job):     # before loading the model: a finished cohort loads nothing
                records.append(log_record(job, skipped_record(job, "local"), options))
            else:
                model = model or cached_model(str(options.model_folder), options.revision)
                with _slide_bar(job, progress) as update:
                    records.append(log_record(job, process(job, model, options, progress=update).record, options))
            bar.update()
    return records


def log_record(job: SlideJob, record: dict[str, Any], options: RunOptions) -> dict[str, Any]:
    """Append the record, with the run metadata, to OUT/run.jsonl (one line, one write); return the record."""
    log_path = job.dest.parent / RUN_LOG
    log_path.parent.mkdir(parents=True, exist_ok=True)
    line = {"time": round(time.time(), 3), **record, **run_provenance(options)}
    with open(log_path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(line) + "\n")
    if record["status"] == "failed":
        log.warning("%s: %s", job.source.name, record.get("error"))
    return record


def skipped_record(job: SlideJob, where: str) -> dict[str, Any]:
    """The record of a job whose outputs were already complete."""
    return {"slide": str(job.source), "out": job.dest.name, "worker": where, "status": "skipped", "seconds": 0.0}


@functools.lru_cache(maxsize=4)
def _provenance(folder: str, revision: str | None, repo: str | None) -> dict[str, Any]:
    path = Path(folder)
    config = read_config(path)
    return run_metadata(model_name=config.model_name or path.name, model_file=path / config.model_file,
                        model_repo=repo, model_revision=revision or local_revision(path))


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
