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
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from imageclf.core.request import parse_scale
from imageclf.errors import ModelError, first_line
from imageclf.hub.source import ModelSource
from imageclf.model.predictor import Predictor
from imageclf.settings import SETTINGS
from imageclf.slides.cohort import SLIDE_SUFFIXES, JobOutcome, RunOptions, SlideJob, process
from imageclf.slides.reader import input_kind
from imageclf.slides.slide_model import SlideModel
from service import UPLOADS
from slide_summary import summary_markdown
from slide_viewer import links
from slide_views import SlideView, SlideViews
from viewer_assets import write_assets

KEEP_RESULTS_S = 3600          # a scored slide stays viewable (and its files downloadable) this long
EXAMPLE_SLIDES = Path(__file__).resolve().parent / "example_slides"
VIEWS = SlideViews(SETTINGS.upload_dir / "slide-views", keep_s=KEEP_RESULTS_S)
_LOCK = threading.Lock()
_MODEL: SlideModel | None = None
_OPTIONS: RunOptions | None = None   # the bound model's folder, revision and repo (the run metadata's)
_UNAVAILABLE: str | None = None   # why this Space's model cannot score slides (no physical scale, ...)
log = logging.getLogger("space")

__all__ = ["predict_slide", "predict_example_slide", "example_slide", "use_model", "viewer_links", "VIEWS",
           "KEEP_RESULTS_S"]


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
                  ) -> tuple[np.ndarray, str, dict[str, Any], str, str, str | None, str]:
    """Score one uploaded whole-slide image (SVS, NDPI, MRXS, SCN, tiled TIFF, DICOM).

    Args:
        path: the uploaded file.
        mpp: the slide's scale, overriding its metadata: microns per pixel ("0.25", "0.25 um/px") or a
            magnification ("40x"); empty: the metadata, else estimated from the nuclei.

    Returns:
        The heatmap (RGB), the summary panel (Markdown), summary.json as a dict (with ``viewer``: the
        slide's viewer and DeepZoom URLs and when they expire), the paths of fields.csv, fields.geojson and
        regions.geojson, and the viewer (an HTML frame on ``/slide/<id>.html``).
    """
    if not path:
        raise gr.Error("Upload a whole-slide image first.")
    try:
        with UPLOADS.claim(path) as upload:      # deleted once scored, whatever happens (the viewer keeps a link)
            model, options = _bound()
            scale = None if not (mpp or "").strip() else parse_scale(mpp, model.spec.scale, what="Microns per pixel")
            if input_kind(upload, max_image_pixels=SETTINGS.max_image_pixels) == "image":
                raise gr.Error("This is an ordinary image, not a whole-slide image: classify it on the image tab.")
            view_id, folder = VIEWS.new_folder()
            try:
                outcome = _score(SlideJob(upload, folder / "results"), model,
                                 dataclasses.replace(options, scale=scale), progress)
                view = VIEWS.add(view_id, upload)
                write_assets(view.results, dimensions=tuple(outcome.summary["slide"]["dimensions"]))
            except BaseException:
                VIEWS.discard(view_id)          # nothing to show or download
                raise
    except ModelError as err:
        raise gr.Error(first_line(err)) from None
    summary = {**_public(outcome.summary), "viewer": viewer_links(view)}
    regions = view.results / "regions.geojson"
    return (outcome.heatmap, summary_markdown(summary), summary, str(view.results / "fields.csv"),
            str(view.results / "fields.geojson"), str(regions) if regions.is_file() else None, viewer_frame(view))


def predict_example_slide(mpp: str | None, progress: gr.Progress = gr.Progress(),  # noqa: B008
                          ) -> tuple[np.ndarray, str, dict[str, Any], str, str, str | None, str]:
    """The bundled example slide, scored like an upload (the file itself is kept)."""
    example = example_slide()
    if example is None:
        raise gr.Error("This Space has no example slide.")
    return predict_slide(str(example), mpp, progress)


def example_slide() -> Path | None:
    """The example slide: ``EXAMPLE_SLIDE``, else the first file in ``space/example_slides/`` (where
    ``make demo`` and the deploy script put the CC0 CMU-1-Small-Region slide), else None."""
    if SETTINGS.example_slide is not None:
        return SETTINGS.example_slide if SETTINGS.example_slide.is_file() else None
    found = sorted(path for path in EXAMPLE_SLIDES.glob("*") if path.suffix.lower() in SLIDE_SUFFIXES)
    return found[0] if found else None


def viewer_links(view: SlideView) -> dict[str, Any]:
    """Where the scored slide can be viewed, relative to the Space's root, and until when."""
    return {"id": view.id, **links(view.id, root="/slide/"),
            "expires_at": datetime.fromtimestamp(view.expires_at, timezone.utc).isoformat(timespec="seconds")}


def viewer_frame(view: SlideView) -> str:
    """The viewer page in a frame (relative URL: it works behind a path prefix too)."""
    page = links(view.id, root="slide/")["page"]
    return (f'<iframe id="slide-viewer-frame" src="{page}" title="Slide viewer" '
            'style="width:100%;height:680px;border:1px solid #ddd" loading="eager"></iframe>'
            f'<div><a href="{page}" target="_blank" rel="noopener">Open the viewer in its own tab</a> '
            f'(available for {round(VIEWS.keep_s / 60)} min)</div>')


def _score(job: SlideJob, model: SlideModel, options: RunOptions, progress: gr.Progress) -> JobOutcome:
    """``process`` with the tab's progress bar; a slide it could not score is one sentence."""

    def report(done: int, total: int) -> None:
        progress(done / total if total else 1.0, desc=f"{done} of {total} tissue fields")

    progress(0.0, desc="Reading the slide and finding its tissue")
    outcome = process(job, model, options, progress=report, where="space")
    if outcome.summary is None or outcome.heatmap is None:
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
