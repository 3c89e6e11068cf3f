"""One typed request, built once at the edge: RGB uint8 pixels plus the parsed scale option.

Every client (the UI, ``/predict``, ``/predict_batch``, ``/predict_tiles``, ``/explain``, MCP,
``scripts/predict_client.py``, ``Predictor.analyze``) decodes its image and parses its
``scale`` text into a :class:`Request` here; nothing after this converts pixels or re-reads
the option.

Example:
    >>> scale = parse_scale("20x", config.scale)     # checked against the model once, per call
    >>> request = Request(decode_image("tile.jpeg"), scale)
    >>> request.scale.microns_per_pixel
    0.5
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from imageclf.core.imaging import ImageError
from imageclf.core.scale import ScaleRequest, ScaleSpec
from imageclf.errors import ModelError


DEFAULT_SCALE = "auto"     # the scale option every client sends unless told otherwise
MICRONS_AT_1X = 10.0       # um/px at "1x": a 40x scan is ~0.25 um/px (the usual convention)
MPP_RANGE = (0.05, 20.0)   # um/px: a 400x objective to a 0.5x overview; anything outside is a typo
_NUMBER = r"(\+?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?)"

__all__ = ["DEFAULT_SCALE", "MPP_RANGE", "Request", "ScaleError", "ScaleRequest", "make_request", "parse_scale"]


class ScaleError(ModelError, ValueError):
    """A scale option that cannot be used (bad text, or microns per pixel on a model without them)."""


@dataclass(frozen=True, eq=False)
class Request:
    """One image to answer: full-resolution H x W x 3 RGB ``uint8`` pixels and the scale asked for."""

    pixels: np.ndarray
    scale: ScaleRequest = ScaleRequest("auto")

    def __post_init__(self) -> None:
        pixels = self.pixels
        if not (isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8 and pixels.ndim == 3
                and pixels.shape[-1] == 3):
            raise ImageError("A request needs H x W x 3 RGB uint8 pixels (decode_image or to_rgb_uint8 make them).")


def parse_scale(value: Any, spec: ScaleSpec | None = None, *, what: str = "Scale") -> ScaleRequest:
    """The one scale parser of every client, images and slides: ``"auto"`` (default; also empty or
    ``None``), ``"native"``, microns per pixel (``"0.25"``, ``"0.5 um/px"``, ``"0.5 mpp"``) or an
    objective magnification (``"20x"``: 10 / 20 um/px), checked against the plausible range and the
    model (``spec``: its scale block). ``what`` names the option in messages (the CLI's ``--mpp``).

    Example:
        >>> parse_scale("40x", config.scale).microns_per_pixel, parse_scale(None).mode
        (0.25, 'auto')

    Raises:
        ScaleError: the text is none of these, outside ``MPP_RANGE``, or gives microns per pixel to a
            model that declares none.
    """
    text = DEFAULT_SCALE if value is None else str(value).strip().lower()
    if text in ("", "auto"):
        return ScaleRequest("auto")
    if text == "native":
        return ScaleRequest("native")
    match = re.fullmatch(_NUMBER + r"\s*(x|um/px|um|µm/px|µm|mpp)?", text)
    if not match:
        raise ScaleError(f"{what} {value!r} not understood: use auto, native, microns per pixel "
                         "(e.g. 0.5) or a magnification (e.g. 20x).")
    number = float(match.group(1))
    if not (math.isfinite(number) and number > 0):
        raise ScaleError(f"{what} must be a positive number.")
    mpp = MICRONS_AT_1X / number if match.group(2) == "x" else number
    low, high = MPP_RANGE
    if not low <= mpp <= high:
        raise ScaleError(f"{what} {value} means {mpp:g} um/px, outside the plausible range {low:g}-{high:g} um/px "
                         "(a 40x scan is about 0.25, a 20x scan about 0.5).")
    if spec is None or spec.microns_per_pixel is None:
        note = f" ({spec.microns_per_pixel_note})" if spec and spec.microns_per_pixel_note else ""
        raise ScaleError("This model does not declare microns per pixel" + note + "; use scale=auto or scale=native.")
    return ScaleRequest("microns_per_pixel", microns_per_pixel=mpp)


def make_request(pixels: np.ndarray, scale: Any = DEFAULT_SCALE, spec: ScaleSpec | None = None) -> Request:
    """The one place a request is built: decoded pixels plus the ``scale`` option (text, already
    parsed, or ``None``), parsed and checked against the model's scale block ``spec`` when it is text.

    Raises:
        ScaleError: the scale option cannot be used with this model.
        ImageError: the pixels are not H x W x 3 RGB uint8.
    """
    return Request(pixels, scale if isinstance(scale, ScaleRequest) else parse_scale(scale, spec))
