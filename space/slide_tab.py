"""The Space's whole-slide tab: one uploaded slide, scored by the same code as ``scripts/score_slides.py``.

``predict_slide`` is the handler ``app.py`` wires to the tab: the slide is read lazily from
the uploaded file (OpenSlide needs it on disk), scored at the model's physical scale through the
shared engine and refusal rule (``imageclf.slides``), and answered with the heatmap, the summary,
and the fields as CSV and QuPath GeoJSON for download. The uploaded slide is deleted once scored;
the result files stay in ``<upload dir>/slide-results/`` for ``KEEP_RESULTS_S`` seconds.

Example (in app.py):
    >>> import slide_tab
    >>> slide_tab.use_model(PREDICTOR, SOURCE)          # the Space's loaded model, once at start-up
    >>> run = gr.Button("Score slide")
    >>> run.click(slide_tab.predict_slide, [slide_file, mpp_box], [heatmap, summary, csv_file, geojson_file])
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from imageclf.errors import ModelError, first_line
from imageclf.hub.source import ModelSource
from imageclf.model.predictor import Predictor
from imageclf.settings import SETTINGS
from imageclf.slides.heatmap import render_heatmap
from imageclf.core.request import parse_scale
from imageclf.slides.reader import input_kind
from imageclf.slides.slide_model import SlideModel
from imageclf.slides.scoring import score_slide
from imageclf.slides.writers import SUMMARY, write_outputs

RESULTS = "slide-results"
KEEP_RESULTS_S = 3600          # result folders older than this are removed at the next request
_LOCK = threading.Lock()
_MODEL: SlideModel | None = None
_UNAVAILABLE: str | None = None   # why this Space's model cannot score slides (no physical scale, ...)
log = logging.getLogger("space")

__all__ = ["predict_slide", "use_model", "KEEP_RESULTS_S"]


def use_model(predictor: Predictor, source: ModelSource | None = None) -> SlideModel | None:
    """Score slides with the Space's loaded model (its Hub commit as the revision, when it has one).

    A model that cannot score slides (no physical scale, whole-image models) leaves the Space
    serving images; the tab then answers every slide with the reason, in one sentence.
    """
    global _MODEL, _UNAVAILABLE
    revision = None if source is None or source.is_local else (source.commit or source.revision)
    with _LOCK:
        try:
            _MODEL, _UNAVAILABLE = SlideModel.from_predictor(predictor, revision=revision), None
        except ModelError as err:
            _MODEL, _UNAVAILABLE = None, first_line(err)
            log.warning("Whole-slide images are not available: %s", _UNAVAILABLE)
        return _MODEL


def predict_slide(path: str | None, mpp: str | None,
                       progress: gr.Progress = gr.Progress(),  # noqa: B008  (how Gradio passes progress)
                       ) -> tuple[np.ndarray, dict[str, Any], str, str]:
    """Score one uploaded whole-slide image (SVS, NDPI, MRXS, SCN, tiled TIFF, DICOM).

    Args:
        path: the uploaded file.
        mpp: microns per pixel, overriding the slide's metadata (empty: the metadata, else estimated
            from the nuclei).

    Returns:
        The heatmap (RGB), summary.json as a dict, and the paths of fields.csv and fields.geojson.
    """
    if not path:
        raise gr.Error("Upload a whole-slide image first.")
    upload = Path(path)
    try:
        model = _model()
        scale = None if not (mpp or "").strip() else parse_scale(mpp, model.spec.scale, what="Microns per pixel")
        if input_kind(upload, max_image_pixels=SETTINGS.max_image_pixels) == "image":
            raise gr.Error("This is an ordinary image, not a whole-slide image: classify it on the image tab.")
        dest = _result_folder()

        def report(done: int, total: int) -> None:
            progress(done / total if total else 1.0, desc=f"{done} of {total} tissue fields")

        progress(0.0, desc="Reading the slide and finding its tissue")
        result = score_slide(upload, model, scale=scale, progress=report)
        heatmap = render_heatmap(result)   # drawn once: shown here and written as heatmap.png
        write_outputs(result, dest, heatmap=heatmap)
    except ModelError as err:
        raise gr.Error(first_line(err)) from None
    finally:
        _forget(upload)
    summary = json.loads((dest / SUMMARY).read_text(encoding="utf-8"))
    # The server's paths are not the caller's business (and a "path" key reads as a file to gradio_client).
    summary.get("slide", {}).pop("path", None)
    return heatmap, summary, str(dest / "fields.csv"), str(dest / "fields.geojson")


def _model() -> SlideModel:
    """The model bound by :func:`use_model` at start-up (``app.py``), or why there is none."""
    with _LOCK:
        if _MODEL is None:
            raise gr.Error(f"This model cannot score whole-slide images: {_UNAVAILABLE or 'no model was bound'}")
        return _MODEL


def _result_folder() -> Path:
    """A new folder for one slide's files; folders older than ``KEEP_RESULTS_S`` are removed."""
    root = SETTINGS.upload_dir / RESULTS
    root.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - KEEP_RESULTS_S
    for old in root.iterdir():
        if old.is_dir() and old.stat().st_mtime < cutoff:
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix="slide-", dir=root))


def _forget(upload: Path) -> None:
    """Delete the uploaded slide if it sits in the upload folder (never a file elsewhere)."""
    try:
        if upload.resolve().is_relative_to(SETTINGS.upload_dir.resolve()) and RESULTS not in upload.parts:
            upload.unlink(missing_ok=True)
    except OSError:
        pass
