"""The Space's whole-slide tab: one uploaded slide, scored into a folder by the command line's own function.

``predict_slide`` is the handler ``app.py`` wires to the tab: the uploaded file is claimed from the
Space's one upload janitor (``service.UPLOADS``: OpenSlide reads it lazily from disk, and it is
deleted once scored), then scored by ``imageclf.slides.cohort.process``, the function the command
line's serial and Dask runs call for each slide (the same scale, tissue, field loop, refusal rule and
files). The answer is what ``process`` returns in memory: the heatmap it drew, the summary it wrote,
and the paths of fields.csv and fields.geojson for download. The result files stay in
``<upload dir>/slide-results/`` for ``KEEP_RESULTS_S`` seconds.

Example (in app.py):
    >>> import slide_tab
    >>> slide_tab.use_model(PREDICTOR, SOURCE)          # the Space's loaded model, once at start-up
    >>> run = gr.Button("Score slide")
    >>> run.click(slide_tab.predict_slide, [slide_file, mpp_box], [heatmap, summary, csv_file, geojson_file])
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from imageclf.core.request import parse_scale
from imageclf.errors import ModelError, first_line
from imageclf.hub.source import ModelSource
from imageclf.model.predictor import Predictor
from imageclf.settings import SETTINGS
from imageclf.slides.cohort import JobOutcome, RunOptions, SlideJob, process
from imageclf.slides.reader import input_kind
from imageclf.slides.slide_model import SlideModel
from service import UPLOADS

RESULTS = "slide-results"
KEEP_RESULTS_S = 3600          # result folders older than this are removed at the next request
_LOCK = threading.Lock()
_MODEL: SlideModel | None = None
_OPTIONS: RunOptions | None = None   # the bound model's folder, revision and repo (the run metadata's)
_UNAVAILABLE: str | None = None   # why this Space's model cannot score slides (no physical scale, ...)
log = logging.getLogger("space")

__all__ = ["predict_slide", "use_model", "KEEP_RESULTS_S"]


def use_model(predictor: Predictor, source: ModelSource | None = None) -> SlideModel | None:
    """Score slides with the Space's loaded model (its Hub commit as the revision, when it has one).

    A model that cannot score slides (no physical scale, whole-image models) leaves the Space
    serving images; the tab then answers every slide with the reason, in one sentence.
    """
    global _MODEL, _OPTIONS, _UNAVAILABLE
    hub = source is not None and not source.is_local
    revision = (source.commit or source.revision) if hub else None
    with _LOCK:
        try:
            _MODEL, _UNAVAILABLE = SlideModel.from_predictor(predictor, revision=revision), None
            _OPTIONS = RunOptions(model_folder=predictor.folder, revision=_MODEL.revision,
                                  repo=source.repo_id if hub else None)
        except ModelError as err:
            _MODEL, _OPTIONS, _UNAVAILABLE = None, None, first_line(err)
            log.warning("Whole-slide images are not available: %s", _UNAVAILABLE)
        return _MODEL


def predict_slide(path: str | None, mpp: str | None,
                  progress: gr.Progress = gr.Progress(),  # noqa: B008  (how Gradio passes progress)
                  ) -> tuple[np.ndarray, dict[str, Any], str, str]:
    """Score one uploaded whole-slide image (SVS, NDPI, MRXS, SCN, tiled TIFF, DICOM).

    Args:
        path: the uploaded file.
        mpp: the slide's scale, overriding its metadata: microns per pixel ("0.25", "0.25 um/px") or a
            magnification ("40x"); empty: the metadata, else estimated from the nuclei.

    Returns:
        The heatmap (RGB), summary.json as a dict, and the paths of fields.csv and fields.geojson.
    """
    if not path:
        raise gr.Error("Upload a whole-slide image first.")
    try:
        with UPLOADS.claim(path) as upload:      # deleted once scored, whatever happens
            model, options = _bound()
            scale = None if not (mpp or "").strip() else parse_scale(mpp, model.spec.scale, what="Microns per pixel")
            if input_kind(upload, max_image_pixels=SETTINGS.max_image_pixels) == "image":
                raise gr.Error("This is an ordinary image, not a whole-slide image: classify it on the image tab.")
            dest = _result_folder()
            outcome = _score(SlideJob(upload, dest), model, dataclasses.replace(options, scale=scale), progress)
    except ModelError as err:
        raise gr.Error(first_line(err)) from None
    return outcome.heatmap, _public(outcome.summary), str(dest / "fields.csv"), str(dest / "fields.geojson")


def _score(job: SlideJob, model: SlideModel, options: RunOptions, progress: gr.Progress) -> JobOutcome:
    """``process`` with the tab's progress bar; a slide it could not score is one sentence, no folder."""

    def report(done: int, total: int) -> None:
        progress(done / total if total else 1.0, desc=f"{done} of {total} tissue fields")

    progress(0.0, desc="Reading the slide and finding its tissue")
    outcome = process(job, model, options, progress=report, where="space")
    if outcome.summary is None or outcome.heatmap is None:
        shutil.rmtree(job.dest, ignore_errors=True)     # error.json only: nothing to offer for download
        raise gr.Error(outcome.record.get("error") or "The slide could not be scored.")
    return outcome


def _public(summary: dict[str, Any]) -> dict[str, Any]:
    """summary.json without the server's paths: not the caller's business (and a "path" key reads as a
    file to gradio_client)."""
    slide = {k: v for k, v in summary.get("slide", {}).items() if k != "path"}
    model = {k: v for k, v in summary.get("model", {}).items() if k != "folder"}
    return {**summary, "slide": slide, "model": model}


def _bound() -> tuple[SlideModel, RunOptions]:
    """The model bound by :func:`use_model` at start-up (``app.py``) and its run options, or why there is none."""
    with _LOCK:
        if _MODEL is None or _OPTIONS is None:
            raise gr.Error(f"This model cannot score whole-slide images: {_UNAVAILABLE or 'no model was bound'}")
        return _MODEL, _OPTIONS


def _result_folder() -> Path:
    """A new folder for one slide's files; folders older than ``KEEP_RESULTS_S`` are removed."""
    root = SETTINGS.upload_dir / RESULTS
    root.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - KEEP_RESULTS_S
    for old in root.iterdir():
        if old.is_dir() and old.stat().st_mtime < cutoff:
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix="slide-", dir=root))

