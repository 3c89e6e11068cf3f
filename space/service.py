"""The Space's endpoint functions, bound to one loaded model (``app.py`` wires them to Gradio).

Their docstrings are the API and MCP tool descriptions, so they are written for callers.
Uploads arrive unprocessed (``preprocess=False``): the file is decoded by the same
``imaging.decode_image`` as in training, and an unreadable file becomes a clear ``gr.Error``.

Example:
    >>> service = Service(Predictor("hub_model"), local_model("hub_model"))
    >>> labels, result = service.predict({"path": "tile.jpeg"})
    >>> result["label"], result["abstained"]
    ('class_b', False)
"""
from __future__ import annotations

import base64
import binascii
import html
import logging
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

import panels
import tiling
from batching import BatchRunner
from explain import GradCam, GradCamError, overlay
from imaging import ImageError, decode_image
from model_source import ModelSource
from uploads import UploadJanitor

MAX_BATCH_FILES = 256      # files per /predict_batch call; clients send chunks (scripts/predict_client.py)
DEFAULT_OPACITY = 0.45
MAX_VIEW_SIDE = 1024       # Grad-CAM overlays are drawn at most this large (px)
log = logging.getLogger("space")
# API uploads are read once and deleted at once (app.py points .registry at Gradio's upload set).
UPLOADS = UploadJanitor()


class Service:
    """One model, its Grad-CAM and a batch runner; methods are the Space's endpoints."""

    def __init__(self, predictor: Any, source: ModelSource, *, max_batch_size: int = 32) -> None:
        self.predictor = predictor
        self.source = source
        self.calibrated = panels.is_calibrated(predictor)
        self.runner: BatchRunner = BatchRunner(predictor.predict_batch, max_batch_size=max_batch_size)
        try:
            self.cam: GradCam | None = GradCam(predictor.model)
            log.info("Grad-CAM on layer %s", "/".join(self.cam.target_path))
        except GradCamError as err:  # the classifier still works without explanations
            log.warning("Grad-CAM unavailable: %s", err)
            self.cam = None

    # Public endpoints -------------------------------------------------------------------

    def predict(self, image: dict[str, Any] | None) -> tuple[dict[str, float], dict[str, Any]]:
        """Classify one image as a single model input (it is resized to the model's input size).

        Concurrent calls are batched into one forward pass. For an image much larger than the
        model input (a slide region), use predict_tiles instead.

        Args:
            image: the image file (for example JPEG, PNG or TIFF).

        Returns:
            The class probabilities by class name (the top three, for a Label), and a JSON object with label (class id), name, confidence, probabilities (class id to probability), abstained (true when the model declines to answer for this image), abstain_reason, model_repo and model_revision.
        """
        result = self.runner(self.predictor.prepare(self.decode(image)))
        return result["confidences"], panels.result_json(result, self.source)

    def predict_batch(self, files: list[str] | None) -> list[dict[str, Any]]:
        """Classify several image files in one call, each as a single model input.

        An unreadable file gets an error message in its row; the other files are still classified.

        Args:
            files: the image files (at most 256 per call).

        Returns:
            One JSON row per file, in order: file (name), label (class id), name, confidence, probabilities (class id to probability), confidences (class name to probability), abstained, abstain_reason and error (null unless the file could not be read).
        """
        if not files:
            raise gr.Error("No files received. Send one or more image files.", print_exception=False)
        if len(files) > MAX_BATCH_FILES:
            raise gr.Error(f"Too many files ({len(files)}); send at most {MAX_BATCH_FILES} per call.",
                           print_exception=False)
        rows: list[dict[str, Any]] = []
        ready: list[tuple[int, np.ndarray]] = []
        for path in files:
            row = {"file": Path(str(path)).name, "label": None, "name": None, "confidence": None,
                   "probabilities": None, "confidences": None, "abstained": None, "abstain_reason": None,
                   "error": None}
            try:
                ready.append((len(rows), self.predictor.prepare(decode_image(UPLOADS.take(str(path))))))
            except ImageError as err:
                row["error"] = str(err)
            except Exception:  # one hostile file must not cost the others their answers
                log.exception("Could not read %s", row["file"])
                row["error"] = "This file could not be read as an image."
            rows.append(row)
        for start in range(0, len(ready), tiling.CHUNK):
            chunk = ready[start:start + tiling.CHUNK]
            results = self.predictor.predict_batch([array for _, array in chunk])
            for (index, _), result in zip(chunk, results, strict=True):
                full = {**panels.result_json(result, self.source), "confidences": dict(result["confidences"])}
                rows[index].update({key: full[key] for key in rows[index] if key in full})
        return rows

    def explain(self, image: dict[str, Any] | None, opacity: float = DEFAULT_OPACITY) -> np.ndarray:
        """Grad-CAM heatmap of the predicted class over the image: where the model looked.

        Red areas raised the score of the predicted class most, blue areas least. It shows
        what the model used, not whether the answer is right.

        Args:
            image: the image file (for example JPEG, PNG or TIFF).
            opacity: heatmap opacity from 0 (image only) to 1 (heatmap only).

        Returns:
            The image with the heatmap blended over it (PNG).
        """
        rgb = self.decode(image)
        cam = self.gradcam(rgb)
        return overlay(cam["image"], cam["heatmap"], opacity=opacity)

    def predict_tiles(self, image: dict[str, Any] | None,
                      progress: gr.Progress = gr.Progress()) -> tuple[np.ndarray, dict[str, Any]]:
        """Classify a large image tile by tile at its own resolution (tiles of the model's input size).

        Background tiles (blank glass, black borders) are skipped; every tissue tile is classified
        (an evenly spread subset when there are more than the tile limit).

        Args:
            image: the image file (for example JPEG, PNG or TIFF), at least one tile in each direction.

        Returns:
            A map of the image with each classified tile tinted in its class colour (abstained tiles grey), and a JSON object with label and name (the most frequent class, null without tissue), tiles (tile_size, grid, tiles_total, tissue_tiles, classified_tiles, capped, max_tiles, counts per class id, abstained, fractions per class id, abstained_fraction), model_repo and model_revision.
        """
        analysis, tile_map = self.tiles(self.decode(image), progress=progress)
        return tile_map, panels.tiles_json(analysis, self.predictor.names, self.source)

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
        if self.cam is None:
            raise gr.Error("Grad-CAM is not available for this model.", print_exception=False)
        result = self.cam.heatmap(self.predictor.prepare(rgb) if model_input is None else model_input)
        scale = min(1.0, MAX_VIEW_SIDE / max(rgb.shape[:2]))
        view = rgb if scale == 1.0 else _resize(rgb, scale)
        return {"image": view, "heatmap": result.heatmap, "class_index": result.class_index}

    def tiles(self, rgb: np.ndarray, *, progress: Any = None) -> tuple[tiling.TileAnalysis, np.ndarray]:
        """Tile analysis plus its map; ``gr.Error`` when the image is smaller than one tile."""
        def report(done: int, total: int) -> None:
            if progress is not None:
                progress((done, total), desc="Classifying tiles", unit="tiles")
        try:
            analysis = tiling.classify_tiles(rgb, self.predictor, progress=report)
        except tiling.TilingError as err:
            raise gr.Error(f"{err} Use /predict for small images.", print_exception=False) from None
        return analysis, tiling.render_tile_map(rgb, analysis)


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
    import cv2

    return cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
