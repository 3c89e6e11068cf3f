"""Physical scale: microns per pixel of a slide, and the pyramid level to read.

The slide's scale comes from, in order: a stated scale (``--mpp``, the caller knows better than the
file), the metadata (``openslide.mpp-x``/``-y``, else the TIFF resolution tags), or the nucleus-size
estimate of ``imageclf.core.scale`` run on tissue crops of level 0 (slide mpp = model mpp / relative
nucleus size). Every value is checked against ``imageclf.core.request.MPP_RANGE``; the summary says
which source was used. The model's own scale is its config.json's ``scale.microns_per_pixel``
(``imageclf.slides.slide_model``).

Example:
    >>> choose_level((1.0, 4.0, 16.0), slide_mpp=0.25, model_mpp=0.37)      # the finest level is needed
    0
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from imageclf.core.colour import ColourCheck, tissue_mask
from imageclf.core.scale import estimate_relative_size
from imageclf.core.request import MPP_RANGE
from imageclf.core.spec import ClassifierSpec
from imageclf.slides.reader import SlideError, SlideReader

ESTIMATE_SIDE = 512             # level-0 crops the slide's nucleus size is measured on (the estimator's own crop)
ESTIMATE_CROPS = 8              # the median over at most this many tissue-rich crops

__all__ = ["SlideScale", "check_mpp", "choose_level", "estimate_slide_mpp"]


@dataclass(frozen=True)
class SlideScale:
    """Microns per level-0 pixel of one slide and where the number came from.

    ``source``: ``"override"`` (``--mpp``), ``"metadata"`` or ``"estimate"``; ``None`` mpp: unknown
    (no metadata and no nuclei to measure). ``estimate``: the nucleus-size estimate when it was
    computed (also as a check of the metadata).
    """

    mpp: float | None
    source: str
    detail: str
    estimate: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"um_per_px": None if self.mpp is None else round(self.mpp, 5), "source": self.source,
                "detail": self.detail,
                "nucleus_estimate_um_per_px": None if self.estimate is None else round(self.estimate, 4)}


def check_mpp(value: float, what: str) -> float:
    """``value`` when it is a plausible microns per pixel, else :class:`SlideError` naming ``what``."""
    low, high = MPP_RANGE
    if not (math.isfinite(value) and low <= value <= high):
        raise SlideError(f"{what} {value:g} um/px is outside the plausible range {low:g}-{high:g} um/px "
                         "(a 40x scan is about 0.25, a 20x scan about 0.5).")
    return float(value)


def choose_level(downsamples: tuple[float, ...], *, slide_mpp: float, model_mpp: float) -> int:
    """The pyramid level nearest above the model's scale: the coarsest level whose pixels are no
    larger than the model's (so fields are only ever shrunk to the model's scale); level 0 when
    even level 0 is coarser than the model."""
    target = model_mpp / slide_mpp                  # level-0 pixels per model pixel
    fine = [i for i, d in enumerate(downsamples) if d <= target * (1 + 1e-3)]
    return max(fine, key=lambda i: downsamples[i]) if fine else 0


def estimate_slide_mpp(reader: SlideReader, boxes: list[tuple[int, int]], spec: ClassifierSpec,
                       model_scale: float, check: ColourCheck | None) -> float | None:
    """Microns per level-0 pixel from the nuclei in up to ``ESTIMATE_CROPS`` level-0 crops whose
    top-left corners are ``boxes`` (tissue-rich first); ``None`` when no crop has nuclei to measure."""
    if spec.scale is None or spec.scale.reference is None:
        return None
    sizes = []
    for x, y in boxes[:ESTIMATE_CROPS]:
        crop = reader.read(x, y, 0, ESTIMATE_SIDE, ESTIMATE_SIDE)
        with warnings.catch_warnings():   # widths a crop is too small for are NaN: expected, not news
            warnings.simplefilter("ignore", RuntimeWarning)
            relative, _ = estimate_relative_size(crop, spec.scale.reference,
                                                 tissue=lambda c=crop: tissue_mask(c, check))
        if relative is not None:
            sizes.append(relative)
    if not sizes:
        return None
    estimate = model_scale / float(np.median(sizes))
    low, high = MPP_RANGE
    return estimate if low <= estimate <= high else None
