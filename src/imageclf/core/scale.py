"""How large an image's nuclei are compared with the model's training tiles, and what to do about it.

A model learns cells at one size in pixels. An upload may come at any magnification: the
LC25000 photographs a user downloads are 768 px (3.43x the 224 px tiles the model saw), slides
from other labs come at 10x-40x. So before classifying, every path decides the image's scale
(:func:`decide_scale`) and resamples it so nuclei have their training size.

The estimate (``auto``) is a scale-space signature of the haematoxylin channel: colour
deconvolution (Ruifrok & Johnston) isolates nuclear stain; the mean squared response of
scale-normalised Laplacian-of-Gaussian filters over a range of widths peaks near the nucleus
radius. Comparing the whole curve with reference curves measured on training tiles (and on
training mosaics shrunk 1-4.8x, which carry the blur small nuclei get) gives the size ratio;
a curve shifted along the scale axis means larger nuclei. Matching the whole curve is far more
stable than picking its peak, which jumps between nuclei and cell clusters.

Example:
    >>> request = parse_scale("auto", config.scale)    # imageclf.core.request; or "native", "0.5", "20x"
    >>> decision = decide_scale(rgb, config.scale, request)
    >>> decision.relative_size, decision.factor, decision.method
    (3.3, 0.303, 'auto: nucleus size (scale-space-v1)')
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np



ESTIMATOR = "scale-space-v1"
STEPS_PER_OCTAVE = 4
SIGMAS = tuple(0.7 * 2 ** (i / STEPS_PER_OCTAVE) for i in range(6 * STEPS_PER_OCTAVE + 1))  # 0.7-44.8 px
# Ruifrok & Johnston's stain vectors (rows: haematoxylin, eosin, DAB; optical density per R, G, B),
# the one copy in the project; the first column of the inverse reads haematoxylin.
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], np.float64)
_HAEMATOXYLIN = np.linalg.inv(RGB_FROM_HED)[:, 0].astype(np.float32)
CROP_SIDE = 512            # large images are measured on a few tissue-rich crops of this size
TissueMask = Callable[[], np.ndarray]  # a boolean tissue mask, computed only when asked for
MAX_CROPS = 4
MIN_SIGNAL = 1e-4          # mean squared nuclear response below this: no stained structure to measure
MAX_SHIFT_OCTAVES = 3.5    # nuclei up to 2**3.5 = 11x larger than in training can be recognised

__all__ = ["NucleusReference", "ScaleRequest", "ScaleSpec", "ScaleDecision", "energy_curve", "estimate_relative_size", "decide_scale", "haematoxylin",
           "ESTIMATOR", "SIGMAS"]


@dataclass(frozen=True)
class NucleusReference:
    """What nuclei look like at the model's input scale, measured on training tiles.

    ``curves``: one mean scale-space energy curve (``src/imageclf/core/scale.py``) per zoom-out factor in
    ``zoom_factors`` (1 = the training tiles themselves); an image's relative scale is found by
    matching its curve against these. ``diameter_px``: nucleus diameter in model-input pixels
    estimated by the same code (median, 10th and 90th percentile over training tiles).
    """

    sigmas: tuple[float, ...]
    zoom_factors: tuple[float, ...]
    curves: tuple[tuple[float, ...], ...]
    diameter_px: tuple[float, float, float]
    tiles: int
    estimator: str = "scale-space-v1"

    def __post_init__(self) -> None:
        if len(self.curves) != len(self.zoom_factors) or any(len(c) != len(self.sigmas) for c in self.curves):
            raise ValueError("scale.reference: need one curve of len(sigmas) values per zoom factor.")
        if not self.zoom_factors or self.zoom_factors[0] != 1.0:
            raise ValueError("scale.reference.zoom_factors must start at 1.0 (the training tiles).")


@dataclass(frozen=True)
class ScaleSpec:
    """The physical scale one model input stands for.

    ``field_of_view_px``: source pixels one input side covers (LC25000: a 768 px photograph
    shrunk to 224). ``microns_per_pixel``: of the model input, when the source says (else
    ``None`` and ``microns_per_pixel_note`` says why). ``relative_size_range``: nucleus size in
    the upload over the training size, outside which the model abstains.
    """

    field_of_view_px: int | None
    microns_per_pixel: float | None
    microns_per_pixel_note: str | None
    reference: NucleusReference | None
    relative_size_range: tuple[float, float] = (0.2, 10.0)

    @property
    def physical(self) -> bool:
        """True when the model declares its microns per pixel (slides and stated scales need it)."""
        return self.microns_per_pixel is not None


@dataclass(frozen=True)
class ScaleRequest:
    """What the caller asked for: ``auto``, ``native`` or a physical pixel size."""

    mode: str                              # "auto" | "native" | "microns_per_pixel"
    microns_per_pixel: float | None = None


@dataclass(frozen=True)
class ScaleDecision:
    """How one image is brought to the model's scale.

    ``relative_size``: nucleus size in the upload's pixels over the training size (3.4 for a
    768 px LC25000 original). ``factor``: resampling applied to the upload (1 / relative_size).
    ``measured`` is False when ``auto`` found no stained nuclei to measure. Whether the scale is
    usable is the refusal rule's call (``imageclf.core.refusal.judge_scale``), not this record's.
    """

    mode: str
    relative_size: float
    method: str
    measured: bool = True
    nucleus_diameter_px: float | None = None

    @property
    def factor(self) -> float:
        return 1.0 / self.relative_size

    def to_dict(self, *, refused: str | None = None) -> dict[str, Any]:
        """JSON-ready; ``refused``: the phrase of the scale's refusal, if any (``ok`` and ``reason`` say it)."""
        return {"mode": self.mode, "method": self.method, "relative_size": round(self.relative_size, 4),
                "factor": round(self.factor, 4), "nucleus_diameter_px": None if self.nucleus_diameter_px is None
                else round(self.nucleus_diameter_px, 2), "ok": refused is None,
                "reason": refused}


def haematoxylin(rgb: np.ndarray) -> np.ndarray:
    """Haematoxylin optical density per pixel (float32 H x W): high on nuclei."""
    optical_density = -np.log10((rgb.astype(np.float32) + 1.0) / 256.0)
    return optical_density @ _HAEMATOXYLIN


def energy_curve(rgb: np.ndarray) -> np.ndarray:
    """log mean squared scale-normalised LoG response of the haematoxylin channel, per ``SIGMAS``.

    Wide filters run on a half-size pyramid level (same response, a quarter of the cost);
    widths the image is too small for are NaN.
    """
    level_image = haematoxylin(rgb)
    level = 0
    curve = []
    for sigma in SIGMAS:
        while sigma / 2 ** level >= 2.8 and min(level_image.shape) > 32:
            level_image = cv2.pyrDown(level_image)
            level += 1
        local = sigma / 2 ** level
        if min(level_image.shape) <= 4 * local:
            curve.append(np.nan)
            continue
        size = int(2 * round(3 * local) + 1)
        blurred = cv2.GaussianBlur(level_image, (size, size), local)
        response = -cv2.Laplacian(blurred, cv2.CV_32F) * local * local
        curve.append(float(np.mean(np.square(np.maximum(response, 0.0)))))
    return np.log(np.asarray(curve, np.float64) + 1e-12)


def estimate_relative_size(rgb: np.ndarray, reference: NucleusReference, *,
                           tissue: TissueMask | None = None) -> tuple[float | None, float]:
    """Nucleus size in ``rgb`` relative to the training tiles, and the curve-match residual.

    Returns ``(None, inf)`` when there is no stained structure to measure. ``tissue``: an
    optional function giving a boolean tissue mask of ``rgb``, called only for images large
    enough to be measured on crops (the mask of a big upload costs a full-size colour pass).
    """
    curves = [energy_curve(crop) for crop in _crops(rgb, tissue)]
    # mean over crops of each scale's energy, NaN where no crop measured that scale (written out:
    # np.nanmean warns "Mean of empty slice" on such columns, once per image)
    energy = np.exp(np.stack(curves))
    counts = np.isfinite(energy).sum(axis=0)
    mean = np.where(counts > 0, np.nansum(energy, axis=0) / np.maximum(counts, 1), np.nan)
    curve = np.log(mean)
    if not np.isfinite(curve).any() or np.nanmax(curve) < math.log(MIN_SIGNAL):
        return None, math.inf
    templates = np.asarray(reference.curves, np.float64)
    # Candidates: zoom-outs (smaller nuclei) against their own templates, zoom-ins (larger
    # nuclei, a sharper image) as shifts of the 1x template along the scale axis.
    candidates: list[tuple[float, float]] = []   # (log2 relative size, residual)
    for zoom, template in zip(reference.zoom_factors, templates, strict=True):
        candidates.append((-math.log2(zoom), _residual(curve, template)))
    for step in range(1, int(MAX_SHIFT_OCTAVES * STEPS_PER_OCTAVE) + 1):
        shifted = _shift(curve, step)
        candidates.append((step / STEPS_PER_OCTAVE, _residual(shifted, templates[0])))
    candidates.sort()
    logs = np.array([c[0] for c in candidates])
    errors = np.array([c[1] for c in candidates])
    best = int(np.nanargmin(errors))
    estimate = logs[best]
    if 0 < best < len(errors) - 1 and np.isfinite(errors[best - 1:best + 2]).all():
        a, b, c = errors[best - 1:best + 2]
        curvature = a - 2 * b + c
        if curvature > 0:  # parabola through the three: sub-step refinement
            half_step = (logs[best + 1] - logs[best - 1]) / 2
            estimate += float(np.clip(0.5 * (a - c) / curvature, -0.5, 0.5)) * half_step
    return float(2 ** estimate), float(errors[best])


def decide_scale(rgb: np.ndarray, spec: ScaleSpec | None, request: ScaleRequest, *,
                 tissue: TissueMask | None = None) -> ScaleDecision:
    """The one rule every path uses to find an image's scale relative to the model's.

    ``native`` trusts the pixels; ``microns_per_pixel`` (accepted by ``parse_scale`` only for a
    model that declares its own) compares the two; ``auto`` estimates from nuclei (a model
    without a scale reference is served natively).
    """
    if request.mode == "native":
        return ScaleDecision("native", 1.0, "native: the upload's pixels as they are")
    if request.mode == "microns_per_pixel":
        relative = spec.microns_per_pixel / float(request.microns_per_pixel)
        return ScaleDecision("microns_per_pixel", relative, f"given: {request.microns_per_pixel:g} um/px")
    if spec is None or spec.reference is None:
        return ScaleDecision("native", 1.0, "native: the model declares no scale reference")
    relative, _ = estimate_relative_size(rgb, spec.reference, tissue=tissue)
    if relative is None:
        return ScaleDecision("auto", 1.0, f"auto: nucleus size ({ESTIMATOR})", measured=False)
    diameter = relative * float(spec.reference.diameter_px[0])
    return ScaleDecision("auto", relative, f"auto: nucleus size ({ESTIMATOR})", nucleus_diameter_px=diameter)


def _residual(curve: np.ndarray, template: np.ndarray) -> float:
    usable = np.isfinite(curve) & np.isfinite(template)
    if usable.sum() < 2 * STEPS_PER_OCTAVE:
        return math.inf
    diff = curve[usable] - template[usable]
    return float(np.mean(np.square(diff - diff.mean())))  # the level is free: only the shape counts


def _shift(curve: np.ndarray, step: int) -> np.ndarray:
    """The curve an image with nuclei 2**(step/steps) smaller would give (NaN past the end)."""
    shifted = np.full_like(curve, np.nan)
    shifted[:len(curve) - step] = curve[step:]
    return shifted


def _crops(rgb: np.ndarray, tissue: TissueMask | None) -> list[np.ndarray]:
    """The whole image if small, else up to ``MAX_CROPS`` crops with the most tissue."""
    height, width = rgb.shape[:2]
    if max(height, width) <= 2 * CROP_SIDE:
        return [rgb]
    side = min(CROP_SIDE, height, width)
    ys = np.linspace(0, height - side, num=max(1, round(height / side))).astype(int)
    xs = np.linspace(0, width - side, num=max(1, round(width / side))).astype(int)
    boxes = [(y, x) for y in ys for x in xs]
    if tissue is not None:
        mask = tissue()
        boxes.sort(key=lambda box: -float(mask[box[0]:box[0] + side, box[1]:box[1] + side].mean()))
    else:
        boxes = [boxes[i] for i in np.linspace(0, len(boxes) - 1, num=min(MAX_CROPS, len(boxes))).astype(int)]
    return [rgb[y:y + side, x:x + side] for y, x in boxes[:MAX_CROPS]]
