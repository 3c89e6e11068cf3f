"""Physical scale: microns per pixel of the slide and of the model, and the pyramid level to read.

The slide's scale comes from, in order: ``--mpp`` (the caller knows better than the file), the
metadata (``openslide.mpp-x``/``-y``), or the nucleus-size estimate of ``imageclf.core.scale`` run on
tissue crops of level 0 (slide mpp = model mpp / relative nucleus size). Every value is checked
against ``MPP_RANGE``; the summary says which source was used.

The model's scale is ``spec.scale.microns_per_pixel`` when the model's config declares it, else the
estimate in ``model_scale.json`` beside this module (made by ``scripts/estimate_model_mpp.py``) when
it was measured for this model.

Example:
    >>> model_mpp(spec.scale, "lung-histopathology-densenet121")
    (0.37, 'estimate: model_scale.json (median over 44 MoNuSeg tiles at 0.25 um/px)')
    >>> choose_level((1.0, 4.0, 16.0), slide_mpp=0.25, model_mpp=0.37)      # the finest level is needed
    0
"""
from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imageclf.core.colour import ColourCheck, tissue_mask
from imageclf.core.scale import estimate_relative_size
from imageclf.core.spec import ClassifierSpec
from imageclf.model.config import ScaleSpec
from imageclf.slides.reader import SlideError, SlideReader

MPP_RANGE = (0.05, 20.0)        # um/px: a 400x objective to a 0.5x overview; anything outside is a typo
MODEL_SCALE_FILE = Path(__file__).with_name("model_scale.json")
ESTIMATE_SIDE = 512             # level-0 crops the slide's nucleus size is measured on (the estimator's own crop)
ESTIMATE_CROPS = 8              # the median over at most this many tissue-rich crops

__all__ = ["MPP_RANGE", "MODEL_SCALE_FILE", "SlideScale", "check_mpp", "choose_level", "estimate_slide_mpp",
           "model_mpp", "parse_mpp", "read_model_scale"]


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


def parse_mpp(text: str | float | None, what: str = "--mpp") -> float | None:
    """The ``--mpp`` option (``what`` names it in errors) as a number (``None``/empty: not given),
    checked against ``MPP_RANGE``.

    Raises:
        SlideError: not a number, or outside the plausible range.
    """
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    raw = str(text).strip().lower()
    match = re.fullmatch(r"([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?)\s*(?:um/px|µm/px|um|µm|mpp)?", raw)
    if not match:
        raise SlideError(f"{what} {text!r} is not a number of microns per pixel (e.g. 0.25 for a 40x scan).")
    return check_mpp(float(match.group(1)), what)


def check_mpp(value: float, what: str) -> float:
    """``value`` when it is a plausible microns per pixel, else :class:`SlideError` naming ``what``."""
    low, high = MPP_RANGE
    if not (math.isfinite(value) and low <= value <= high):
        raise SlideError(f"{what} {value:g} um/px is outside the plausible range {low:g}-{high:g} um/px "
                         "(a 40x scan is about 0.25, a 20x scan about 0.5).")
    return float(value)


def read_model_scale(path: Path = MODEL_SCALE_FILE) -> dict[str, Any] | None:
    """The measured model scale (``scripts/estimate_model_mpp.py``), or ``None`` when absent."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as err:
        raise SlideError(f"{path.name} is unreadable ({err}); rerun scripts/estimate_model_mpp.py.") from None


def model_mpp(scale: ScaleSpec | None, model_name: str, *, scale_file: Path = MODEL_SCALE_FILE) -> tuple[float, str]:
    """Microns per pixel of the model's input (``scale``: its config's scale block) and where that comes from.

    Raises:
        SlideError: the model declares none and ``model_scale.json`` was not measured for it.
    """
    if scale is not None and scale.microns_per_pixel is not None:
        return check_mpp(scale.microns_per_pixel, "The model's microns per pixel"), "config.json scale block"
    measured = read_model_scale(scale_file)
    if measured and measured.get("model_name") == model_name:
        value = check_mpp(float(measured["um_per_px"]), f"{scale_file.name}'s value")
        return value, f"estimate: {scale_file.name} ({measured.get('summary', measured.get('method', ''))})"
    raise SlideError(f"The model {model_name!r} declares no microns per pixel and {scale_file.name} was not "
                     "measured for it; add scale.microns_per_pixel to its config.json or run "
                     "scripts/estimate_model_mpp.py.")


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
