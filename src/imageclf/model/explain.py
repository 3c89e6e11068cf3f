"""Grad-CAM, as the Space and the scripts use it: the heatmap's colours, its overlay, and the Keras half
built on first use.

Colouring and blending are plain OpenCV (:func:`colour_scale`, :func:`colourise`, :func:`overlay`).
Computing a heatmap needs gradients, so Keras and TensorFlow: that half is ``imageclf.model.gradcam``
(:class:`GradCam` and its helpers), imported only here, by
:class:`LazyGradCam`, which builds one on the first request, so a Space that is never asked for a heatmap
never loads TensorFlow (seconds of start-up, hundreds of MB).

Example:
    >>> cam = LazyGradCam(lambda: predictor.model)           # nothing loaded yet
    >>> result = cam.get().heatmap(predictor.prepare("tile.jpeg"))   # Keras loads here, once
    >>> result.heatmap.shape, result.class_index            # feature-map resolution, in [0, 1]
    ((7, 7), 2)
    >>> overlay(rgb, result.heatmap, opacity=0.4).shape      # blended onto any image size
    (224, 224, 3)
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from imageclf.errors import ModelError, first_line

if TYPE_CHECKING:  # types only: importing it loads TensorFlow
    from imageclf.model.gradcam import GradCam

__all__ = ["LazyGradCam", "colour_scale", "colourise", "overlay"]

log = logging.getLogger(__name__)


def _keras_half() -> ModuleType:
    from imageclf.model import gradcam  # deferred: TensorFlow (seconds, hundreds of MB), only once a heatmap is asked for
    return gradcam


class LazyGradCam:
    """A :class:`GradCam` built on first use from ``load_model()`` (a Keras model), once, thread-safe.

    ``get()`` gives it, or ``None`` when the model cannot be explained or loaded (the reason logged
    once, kept in ``error``): the classifier still works without explanations.
    """

    def __init__(self, load_model: Callable[[], Any]) -> None:
        self._load_model = load_model
        self._cam: GradCam | None = None
        self.error: str | None = None
        self._lock = threading.Lock()

    def get(self) -> GradCam | None:
        with self._lock:   # concurrent first requests build it once
            if self._cam is None and self.error is None:
                start = time.perf_counter()
                try:
                    self._cam = _keras_half().GradCam(self._load_model())
                except ModelError as err:   # GradCamError, or a model.keras that fails its load checks
                    self.error = first_line(err)
                    log.warning("Grad-CAM unavailable: %s", self.error)
                else:
                    log.info("Grad-CAM on layer %s, ready in %.1f s (Keras loaded on this first request)",
                             "/".join(self._cam.target_path), time.perf_counter() - start)
            return self._cam


def colour_scale(steps: int = 9) -> list[tuple[int, int, int]]:
    """RGB colours of the heatmap from 0 (least) to 1 (most), for a legend drawn from the same map."""
    ramp = np.linspace(0, 255, steps).round().astype(np.uint8).reshape(1, -1)
    return [tuple(int(v) for v in rgb) for rgb in
            cv2.cvtColor(cv2.applyColorMap(ramp, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)[0]]


def colourise(heatmap: np.ndarray, *, size: tuple[int, int]) -> np.ndarray:
    """A [0, 1] heatmap resized to ``(height, width)`` and coloured (jet: blue low, red high), RGB uint8."""
    height, width = size
    heat = cv2.resize(np.asarray(heatmap, np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    heat = np.clip(heat * 255.0, 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(heat, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def overlay(rgb: np.ndarray, heatmap: np.ndarray, *, opacity: float = 0.45) -> np.ndarray:
    """Blend a coloured heatmap onto an RGB uint8 image of any size; ``opacity`` 0 shows the image only.

    Example:
        >>> overlay(np.zeros((10, 20, 3), np.uint8), np.ones((2, 2)), opacity=1.0)[0, 0]
        array([128,   0,   0], dtype=uint8)
    """
    opacity = float(np.clip(opacity, 0.0, 1.0))
    colour = colourise(heatmap, size=rgb.shape[:2]).astype(np.float32)
    blended = rgb.astype(np.float32) * (1.0 - opacity) + colour * opacity
    return np.clip(blended.round(), 0, 255).astype(np.uint8)
