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

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from imageclf.core.imaging import ImageError
from imageclf.errors import ModelError

if TYPE_CHECKING:  # types only
    from imageclf.model.config import ScaleSpec

DEFAULT_SCALE = "auto"     # the scale option every client sends unless told otherwise
MICRONS_AT_1X = 10.0       # um/px at "1x": a 40x scan is ~0.25 um/px (the usual convention)

__all__ = ["DEFAULT_SCALE", "Request", "ScaleError", "ScaleRequest", "parse_scale"]


class ScaleError(ModelError, ValueError):
    """A scale option that cannot be used (bad text, or microns per pixel on a model without them)."""


@dataclass(frozen=True)
class ScaleRequest:
    """What the caller asked for: ``auto``, ``native`` or a physical pixel size."""

    mode: str                              # "auto" | "native" | "microns_per_pixel"
    microns_per_pixel: float | None = None


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


def parse_scale(value: Any, spec: ScaleSpec | None = None) -> ScaleRequest:
    """Read the ``scale`` option: ``"auto"`` (default), ``"native"``, ``"0.25"`` (microns per
    pixel) or ``"20x"`` (objective magnification, 10 / x um/px), and check it against the model.

    Example:
        >>> parse_scale("40x", config.scale).microns_per_pixel, parse_scale(None).mode
        (0.25, 'auto')

    Raises:
        ScaleError: the text is none of these, or it gives microns per pixel to a model that
            declares none (``spec``: the model's scale block).
    """
    text = DEFAULT_SCALE if value is None else str(value).strip().lower()
    if text in ("", "auto"):
        return ScaleRequest("auto")
    if text == "native":
        return ScaleRequest("native")
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(x|um/px|um|µm/px|µm|mpp)?", text)
    if not match:
        raise ScaleError(f"Scale {value!r} not understood: use auto, native, microns per pixel "
                         "(e.g. 0.5) or a magnification (e.g. 20x).")
    number = float(match.group(1))
    if number <= 0:
        raise ScaleError("Scale must be a positive number.")
    if spec is None or spec.microns_per_pixel is None:
        note = f" ({spec.microns_per_pixel_note})" if spec and spec.microns_per_pixel_note else ""
        raise ScaleError("This model does not declare microns per pixel" + note + "; use scale=auto or scale=native.")
    mpp = MICRONS_AT_1X / number if match.group(2) == "x" else number
    return ScaleRequest("microns_per_pixel", microns_per_pixel=mpp)
