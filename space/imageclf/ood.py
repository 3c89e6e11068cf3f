"""When to abstain: a stain/tissue colour check on the input plus a confidence floor.

Framework-free (numpy + OpenCV) so the Space, scripts and the training code share one rule.
Nothing here is specific to lung tissue: the colour palette and every bound are *fitted* from
in-distribution images and the confidence floor on validation probabilities, both by
``training.calibration.abstention`` (this module only applies them). For data where a stain check makes no sense (CT, X-ray)
use ``method="softmax"`` (confidence only) or ``"none"`` (never abstain).

Example:
    >>> rule = AbstainRule.from_dict(config["abstain"])      # None or {"method": "none"} disables it
    >>> abstained, reason = decide(rgb, probabilities, rule)  # rgb: the uint8 model input
    >>> abstained, reason
    (True, 'Its colours are unlike those of the images the model was trained on (colour check).')
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import cv2
import numpy as np

VERSION = 1
METHODS = ("colour+softmax", "colour", "softmax", "none")
# Worded for any dataset: the check is fitted to whatever images the model was trained on.
COLOUR_REASON = "Its colours are unlike those of the images the model was trained on (colour check)."
CONFIDENCE_REASON = "The model is not confident enough that this is one of its classes."
FEATURE_REASON = ("It does not look like the tissue the model was trained on (feature check): another organ, "
                  "another kind of image or an unusual preparation.")
# Which side of each feature is bounded: (low, high). An unbounded side is stored as null.
FEATURE_SIDES = {
    "tissue_fraction": (True, False),   # share of pixels that are not blank background
    "palette_fraction": (True, False),  # share of coloured pixels in the fitted stain palette
    "saturation": (True, False),        # 90th percentile of saturation (grey images)
    "texture": (True, False),           # log mean gradient (blank and smooth images)
    "clipped_fraction": (False, True),  # share of pure white/black pixels (graphics, text, scans)
    "flat_fraction": (False, True),     # share of tissue pixels with no texture (flat colour fields)
    "smoothness": (True, True),         # gradient left after a slight blur (pixel noise loses it)
}


@dataclass(frozen=True)
class ColourCheck:
    """Fitted colour statistics: a hue x saturation palette and per-feature [low, high] bounds.

    ``palette`` has one string per hue bin, one character ("0"/"1") per saturation bin.
    """

    palette: tuple[str, ...]
    bounds: dict[str, tuple[float | None, float | None]]
    work_side: int = 96            # features are computed on a work_side x work_side copy
    white_value: int = 200         # background: brighter than this and greyer than grey_saturation
    black_value: int = 35          # background: darker than this
    grey_saturation: int = 40      # below this saturation a pixel is "uncoloured"
    tint_saturation: int = 80      # bright pixels paler than this are a glass tint, hue not judged

    def __post_init__(self) -> None:
        rows = self.palette
        if not rows or len({len(r) for r in rows}) != 1 or not all(set(r) <= {"0", "1"} for r in rows):
            raise ValueError("Colour palette must be equal-length strings of '0'/'1'.")
        unknown = set(self.bounds) - set(FEATURE_SIDES)
        numbers = all(len(pair) == 2 and all(v is None or isinstance(v, (int, float)) for v in pair)
                      for pair in self.bounds.values())
        if unknown or not numbers:
            raise ValueError(f"Colour bounds must be [low, high] number pairs for {sorted(FEATURE_SIDES)}.")

    @property
    def hue_bins(self) -> int:
        return len(self.palette)

    @property
    def saturation_bins(self) -> int:
        return len(self.palette[0])

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["palette"] = list(self.palette)
        data["bounds"] = {k: list(v) for k, v in self.bounds.items()}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColourCheck:
        data = dict(data)
        data["palette"] = tuple(str(row) for row in data["palette"])
        data["bounds"] = {k: (v[0], v[1]) for k, v in data["bounds"].items()}
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class AbstainRule:
    """The abstention rule as stored under ``"abstain"`` in config.json.

    Example:
        >>> AbstainRule(method="softmax", min_confidence=0.62).to_dict()["method"]
        'softmax'
    """

    method: str = "none"
    min_confidence: float | None = None  # abstain when the top probability is below this
    colour: ColourCheck | None = None
    version: int = VERSION
    fitted: dict[str, Any] = field(default_factory=dict)  # provenance: set, size, val rates

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"Unknown abstain method {self.method!r}; choose from {METHODS}.")
        if self.uses_colour and self.colour is None:
            raise ValueError(f"Method {self.method!r} needs a fitted colour check.")
        if self.uses_softmax and not (self.min_confidence is not None and 0.0 <= self.min_confidence <= 1.0):
            raise ValueError(f"Method {self.method!r} needs min_confidence in [0, 1].")

    @property
    def uses_colour(self) -> bool:
        return self.method in ("colour+softmax", "colour")

    @property
    def uses_softmax(self) -> bool:
        return self.method in ("colour+softmax", "softmax")

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "version": self.version, "min_confidence": self.min_confidence,
                "colour": self.colour.to_dict() if self.colour else None, "fitted": dict(self.fitted)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> AbstainRule:
        """Read a rule; ``None`` or an empty dict is the disabled rule."""
        if not data:
            return cls()
        version = int(data.get("version", VERSION))
        if version > VERSION:
            raise ValueError(f"Abstain rule version {version} is newer than this code ({VERSION}).")
        colour = data.get("colour")
        confidence = data.get("min_confidence")
        return cls(method=str(data.get("method", "none")),
                   min_confidence=None if confidence is None else float(confidence),
                   colour=ColourCheck.from_dict(colour) if colour else None,
                   version=version, fitted=dict(data.get("fitted") or {}))

    def without_colour(self) -> AbstainRule:
        """The same rule with the colour check switched off (for non-stained data)."""
        method = "softmax" if self.uses_softmax else "none"
        return replace(self, method=method, colour=None)


# Colour features ---------------------------------------------------------------------------


def _prepare(rgb: np.ndarray, check: ColourCheck) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Small RGB, HSV and grey copies; area interpolation averages away JPEG and sensor noise."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"Expected an H x W x 3 uint8 RGB image, got {rgb.shape} {rgb.dtype}.")
    side = check.work_side
    small = cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA)
    return small, cv2.cvtColor(small, cv2.COLOR_RGB2HSV), cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)


def tissue_pixels(hsv: np.ndarray, *, white_value: int, black_value: int, grey_saturation: int) -> np.ndarray:
    """Pixels that are not background: neither bright and unsaturated (glass) nor black."""
    s, v = hsv[..., 1], hsv[..., 2]
    return ~(((v > white_value) & (s < grey_saturation)) | (v < black_value))


def _masks(hsv: np.ndarray, check: ColourCheck) -> tuple[np.ndarray, np.ndarray]:
    """(tissue, coloured): not blank background, and tissue with a hue worth judging.

    Slide glass is often cream or bluish rather than white; its faint tint says nothing
    about the stain, so bright pale pixels are left out of the palette check.
    """
    s, v = hsv[..., 1], hsv[..., 2]
    bright = v > check.white_value
    tissue = tissue_pixels(hsv, white_value=check.white_value, black_value=check.black_value,
                           grey_saturation=check.grey_saturation)
    return tissue, tissue & (s >= check.grey_saturation) & ~(bright & (s < check.tint_saturation))


def _bin_indices(hsv: np.ndarray, hue_bins: int, saturation_bins: int) -> tuple[np.ndarray, np.ndarray]:
    # OpenCV 8-bit hue runs 0..179.
    hue = hsv[..., 0].astype(np.int32) * hue_bins // 180
    sat = hsv[..., 1].astype(np.int32) * saturation_bins // 256
    return hue, sat


def hue_saturation_histogram(rgb: np.ndarray, check: ColourCheck) -> np.ndarray:
    """Normalised histogram of the coloured tissue pixels over (hue bin, saturation bin)."""
    _, hsv, _ = _prepare(rgb, check)
    _, coloured = _masks(hsv, check)
    hist = np.zeros((check.hue_bins, check.saturation_bins))
    hue, sat = _bin_indices(hsv, check.hue_bins, check.saturation_bins)
    np.add.at(hist, (hue[coloured], sat[coloured]), 1.0)
    return hist / max(hist.sum(), 1.0)


def colour_features(rgb: np.ndarray, check: ColourCheck) -> dict[str, float]:
    """The statistics the colour check bounds (see ``FEATURE_SIDES``) for one RGB uint8 image.

    Example:
        >>> colour_features(np.full((224, 224, 3), 255, np.uint8), check)["tissue_fraction"]
        0.0
    """
    small, hsv, grey = _prepare(rgb, check)
    tissue, coloured = _masks(hsv, check)
    palette = np.array([[c == "1" for c in row] for row in check.palette])
    hue, sat = _bin_indices(hsv, check.hue_bins, check.saturation_bins)
    in_palette = palette[hue[coloured], sat[coloured]]
    # Too few coloured pixels to judge the hue: treat as "not in the palette".
    palette_fraction = float(in_palette.mean()) if coloured.mean() > 0.01 else 0.0
    grey = grey.astype(np.float32)
    gradient = _gradient(grey)
    blurred = _gradient(cv2.GaussianBlur(grey, (0, 0), 1.5))
    flat = gradient < 4.0  # Sobel magnitude 4 ~ one grey level per pixel
    clipped = (small.min(axis=-1) >= 250) | (small.max(axis=-1) <= 5)
    return {
        "tissue_fraction": float(tissue.mean()),
        "palette_fraction": palette_fraction,
        "saturation": float(np.percentile(hsv[..., 1][tissue], 90)) if tissue.any() else 0.0,
        "texture": float(np.log10(1.0 + gradient.mean())),
        "clipped_fraction": float(clipped.mean()),
        "flat_fraction": float(flat[tissue].mean()) if tissue.any() else 1.0,
        "smoothness": float(blurred.mean() / max(gradient.mean(), 1e-6)),
    }


def _gradient(grey: np.ndarray) -> np.ndarray:
    return np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))


def colour_outside(features: Mapping[str, float], check: ColourCheck) -> list[str]:
    """Names of the features outside their fitted bounds (empty: the image looks in-domain)."""
    failed = []
    for name, (low, high) in check.bounds.items():
        value = features[name]
        if (low is not None and value < low) or (high is not None and value > high):
            failed.append(name)
    return failed


# The decision -----------------------------------------------------------------------------


def colour_ok(rgb: np.ndarray, rule: AbstainRule | None) -> bool:
    """True when the rule has no colour check or the image passes it."""
    if rule is None or not rule.uses_colour:
        return True
    return not colour_outside(colour_features(rgb, rule.colour), rule.colour)


def confidence_ok(probabilities: np.ndarray, rule: AbstainRule | None) -> bool:
    """True when the rule has no confidence floor or the top probability reaches it."""
    if rule is None or not rule.uses_softmax:
        return True
    return float(np.max(probabilities)) >= rule.min_confidence


def decide(rgb: np.ndarray, probabilities: np.ndarray, rule: AbstainRule | None, *,
           familiar: bool = True) -> tuple[bool, str | None]:
    """Whether to abstain on one image, and why in plain words (``None`` when not abstaining).

    ``rgb`` is the uint8 image exactly as given to the model; ``probabilities`` its output;
    ``familiar``: the feature-space check's verdict (``space/imageclf/feature_ood.py``; True without one).
    The colour check runs first: when the input is not a stained tissue image, nothing else the
    model says means anything; then the feature check (stained, but not the tissue it learned);
    then the confidence floor.

    Example:
        >>> decide(np.full((224, 224, 3), 255, np.uint8), np.array([0.9, 0.05, 0.05]), rule)
        (True, 'Its colours are unlike those of the images the model was trained on (colour check).')
    """
    if not colour_ok(rgb, rule):
        return True, COLOUR_REASON
    if not familiar:
        return True, FEATURE_REASON
    if not confidence_ok(probabilities, rule):
        return True, CONFIDENCE_REASON
    return False, None
