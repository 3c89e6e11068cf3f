"""The Space's endpoint functions, bound to one loaded model (``app.py`` wires them to Gradio).

Their docstrings are the API and MCP tool descriptions, so they are written for callers.
Uploads arrive unprocessed (``preprocess=False``): the file is decoded by the same
``imaging.decode_image`` as in training, and an unreadable file becomes a clear ``gr.Error``.

Example:
    >>> service = Service(Predictor("hub_model"), local_model("hub_model"))    # imageclf.model / imageclf.hub
    >>> labels, result = service.predict({"path": "tile.jpeg"})
    >>> result["label"], result["abstained"]
    ('class_b', False)
"""
from __future__ import annotations

import base64
import binascii
import html
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import gradio as gr
import numpy as np

import panels
from batching import BatchingEngine
from imageclf.core import rule
from imageclf.core.imaging import ImageError, decode_image
from imageclf.core.request import DEFAULT_SCALE, Request, ScaleError, make_request, parse_scale
from imageclf.core.scale import ScaleRequest
from imageclf.core.verdict import ImageAnalysis
from imageclf.hub.source import ModelSource
from imageclf.model.explain import LazyGradCam, overlay
from imageclf.model.predictor import Predictor
from imageclf.settings import SETTINGS
from uploads import UploadJanitor

MAX_BATCH_FILES = 256      # files per /predict_batch call; clients send chunks (scripts/predict_client.py)
DEFAULT_OPACITY = 0.45
BATCH_THREADS = 8          # /predict_batch files in flight at once (their fields share forward passes)
BATCH_ROW_KEYS = ("file", "label", "name", "confidence", "probabilities", "confidences", "abstained",
                  "abstain_reason", "abstain_code", "scale", "fields", "error")
MAX_VIEW_SIDE = 1024       # Grad-CAM overlays are drawn at most this large (px)
log = logging.getLogger("space")
# API uploads are read once and deleted at once (app.py points .registry at Gradio's upload set).
UPLOADS = UploadJanitor(SETTINGS.upload_dir)


class Service:
    """One model, its Grad-CAM and a batch runner; methods are the Space's endpoints."""

    def __init__(self, predictor: Predictor, source: ModelSource, *, max_batch_size: int = 32) -> None:
        self.predictor = predictor
        self.source = source
        self.spec = predictor.spec
        self.calibrated = predictor.model_config.calibrated
        # Single-field requests from concurrent callers meet in shared forward passes.
        self.engine = BatchingEngine(predictor.engine, max_batch_size=max_batch_size)
        # Built on the first heatmap asked for: Keras (TensorFlow) loads then, not at start, so a Space
        # that explains nothing starts seconds sooner and holds the served engine only, not Keras too.
        self.cam = LazyGradCam(lambda: predictor.model)

    # Public endpoints -------------------------------------------------------------------

    def predict(self, image: dict[str, Any] | None,
                scale: str = DEFAULT_SCALE) -> tuple[dict[str, Any], dict[str, Any]]:
        """Classify one H&E image of any size: brought to the model's magnification and reference stains first, then one field or the average over its tissue fields. The model assumes the image is of the tissue it was trained on: it refuses images unlike its training images (abstained, with a reason), but images of other organs only in part (measured rates in the model card), so send only that tissue.

        Concurrent calls are batched into shared forward passes.

        Args:
            image: the image file (for example JPEG, PNG or TIFF).
            scale: "auto" (estimate the magnification from nucleus size, the default), "native" (use the pixels as they are), microns per pixel (e.g. "0.5", only for models that declare theirs) or a magnification (e.g. "20x").

        Returns:
            The class probabilities by class name (for a Label; "Not recognised" when the model abstains), and a JSON object with label (class id), name, confidence, probabilities (class id to probability; all null when abstained), abstained, abstain_reason (one sentence), abstain_code (the reason's stable code, e.g. colour, feature, confidence, fields_refused), scale (mode, method, relative_size, factor, nucleus_diameter_px), fields (how many tissue fields were classified and how many abstained), model_repo and model_revision.
        """
        analysis = self.analyze(self.request(image, scale))
        return panels.label_value(analysis), panels.result_json(analysis, self.source)

    def predict_batch(self, files: list[str] | None, scale: str = DEFAULT_SCALE) -> list[dict[str, Any]]:
        """Classify several image files in one call, each by the same rule as predict (the model's tissue assumed; other organs are refused only in part).

        An unreadable file gets an error message in its row; the other files are still classified.

        Args:
            files: the image files (at most 256 per call).
            scale: as for predict: "auto" (default), "native", microns per pixel or a magnification such as "20x".

        Returns:
            One JSON row per file, in order: file (name), label (class id), name, confidence, probabilities, confidences (class name to probability), abstained, abstain_reason, abstain_code, scale, fields and error (null unless the file could not be read). When abstained, every class field is null.
        """
        if not files:
            raise gr.Error("No files received. Send one or more image files.", print_exception=False)
        if len(files) > MAX_BATCH_FILES:
            raise gr.Error(f"Too many files ({len(files)}); send at most {MAX_BATCH_FILES} per call.",
                           print_exception=False)
        scale_request = self.scale(scale)   # parsed once for the whole call

        def one(path: Any) -> dict[str, Any]:
            row = {key: None for key in BATCH_ROW_KEYS}
            row["file"] = Path(str(path)).name
            try:
                analysis = self.analyze(make_request(decode_image(UPLOADS.take(str(path))), scale_request))
            except ImageError as err:
                row["error"] = str(err)
                return row
            except Exception:  # one hostile file must not cost the others their answers
                log.exception("Could not read %s", row["file"])
                row["error"] = "This file could not be read as an image."
                return row
            row.update({key: value for key, value in panels.result_json(analysis, self.source).items()
                        if key in row})
            row["confidences"] = analysis.confidences
            return row

        # Files run side by side so their single fields meet in the batch runner's forward passes.
        with ThreadPoolExecutor(max_workers=BATCH_THREADS) as pool:
            return list(pool.map(one, files))

    def explain(self, image: dict[str, Any] | None, opacity: float = DEFAULT_OPACITY,
                scale: str = DEFAULT_SCALE) -> np.ndarray:
        """Grad-CAM heatmap of the predicted class over the image: where the model looked.

        Red areas raised the score of the predicted class most, blue areas least. It shows
        what the model used, not whether the answer is right. Only for images answered as one
        field; an image the model does not answer, or a large image cut into fields, gets an error.

        Args:
            image: the image file (for example JPEG, PNG or TIFF).
            opacity: heatmap opacity from 0 (image only) to 1 (heatmap only).
            scale: as for predict.

        Returns:
            The image with the heatmap blended over it (PNG).
        """
        request = self.request(image, scale)
        analysis = self.analyze(request)
        if analysis.abstained:
            raise gr.Error(f"No heatmap: the model does not answer for this image. {analysis.abstain_reason}",
                           print_exception=False)
        if not analysis.one_field:
            raise gr.Error("No heatmap for an image cut into several fields; use predict_tiles for its map.",
                           print_exception=False)
        cam = self.gradcam(request.pixels, analysis.model_input)   # the field is the whole upload, resized
        return overlay(cam["image"], cam["heatmap"], opacity=opacity)

    def predict_tiles(self, image: dict[str, Any] | None, scale: str = DEFAULT_SCALE,
                      progress: gr.Progress = gr.Progress()) -> tuple[np.ndarray, dict[str, Any]]:
        """Classify an image by the same rule as predict (the model's tissue assumed; other organs are refused only in part) and return its field map.

        The image is brought to the model's magnification, cut into model-sized fields, background
        skipped, each tissue field classified; the verdict is the same as predict's.

        Args:
            image: the image file (for example JPEG, PNG or TIFF).
            scale: as for predict.

        Returns:
            A map of the (rescaled) image with each classified field tinted in its class colour (abstained fields grey), and the same JSON object as predict, whose fields entry also holds tile_size, grid, tiles_total, tissue_tiles, classified_tiles, capped, max_tiles, counts and fractions per class id (left out when abstained), abstained, abstained_share and resampled_size.
        """
        analysis = self.analyze(self.request(image, scale), progress=progress)
        return panels.field_map(analysis), panels.result_json(analysis, self.source)

    # Shared steps ----------------------------------------------------------------------

    def decode(self, image: dict[str, Any] | None, *, forget_upload: bool = True) -> np.ndarray:
        """The upload as a full-resolution RGB uint8 array, or a ``gr.Error`` saying what is wrong.

        With ``forget_upload`` (API calls) the uploaded file is deleted as soon as it is read. The
        UI passes False: the page keeps showing that file, so it stays until ``delete_cache``.
        """
        if not image:
            raise gr.Error("No image received. Upload, drag or paste an image first.", print_exception=False)
        try:
            data = _image_data(image)
            return decode_image(UPLOADS.take(data) if forget_upload and isinstance(data, str) else data)
        except ImageError as err:
            raise gr.Error(html.escape(str(err)), title="Cannot read this image", print_exception=False) from None

    def gradcam(self, rgb: np.ndarray, model_input: np.ndarray | None = None) -> dict[str, Any]:
        """Heatmap of the top class plus the (display-sized) image: what ``gr.State`` keeps for re-blending.

        ``model_input``: ``rgb`` already prepared for the model, when the caller has it.
        """
        cam = self.cam.get()
        if cam is None:
            raise gr.Error("Grad-CAM is not available for this model.", print_exception=False)
        result = cam.heatmap(self.predictor.prepare(rgb) if model_input is None else model_input)
        scale = min(1.0, MAX_VIEW_SIDE / max(rgb.shape[:2]))
        view = rgb if scale == 1.0 else _resize(rgb, scale)
        return {"image": view, "heatmap": result.heatmap, "class_index": result.class_index}

    def scale(self, scale: Any) -> ScaleRequest:
        """The ``scale`` option parsed and checked against the model, or a ``gr.Error`` saying what is accepted."""
        try:
            return parse_scale(scale, self.spec.scale)   # refuse early, before any image work
        except ScaleError as err:
            raise gr.Error(str(err), title="Scale option", print_exception=False) from None

    def request(self, image: dict[str, Any] | None, scale: Any, *, forget_upload: bool = True) -> Request:
        """The edge: one upload and its scale option as a typed :class:`Request`, built once per call."""
        pixels = self.decode(image, forget_upload=forget_upload)   # a missing image is named before a bad scale
        return make_request(pixels, self.scale(scale))

    def analyze(self, request: Request, *, progress: Any = None) -> ImageAnalysis:
        """The shared rule (``imageclf.core.rule.analyze``) on this Space's batching engine; ``progress``
        (a ``gr.Progress``) counts the fields of an image cut into several."""
        def counted(done: int, total: int) -> None:
            if progress is not None and total > 1:
                progress((done, total), desc="Classifying fields", unit="fields")

        return rule.analyze(request, self.spec, self.engine, progress=counted)


def _image_data(payload: dict[str, Any]) -> str | bytes:
    """The uploaded file's path in Gradio's upload cache, or the bytes of a data: URL."""
    if payload.get("path"):
        return str(payload["path"])
    url = payload.get("url") or ""
    if url.startswith("data:") and "," in url:
        try:
            return base64.b64decode(url.split(",", 1)[1], validate=True)
        except (binascii.Error, ValueError):
            raise ImageError("The image data is not valid base64.") from None
    raise ImageError("No image data received.")


def _resize(rgb: np.ndarray, scale: float) -> np.ndarray:
    return cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
