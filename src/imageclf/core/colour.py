"""The colour statistics of a stained-tissue image, and the fitted bounds they are checked against.

Framework-free (numpy + OpenCV): the refusal rule (``imageclf.core.refusal``), the field cutter
(background = not tissue), and training (``training.calibration.abstention`` fits the palette and
bounds) share these functions. Nothing here decides a refusal; it only measures.

Example:
    >>> check = ColourCheck.from_dict(config.abstain.colour.to_dict())
    >>> colour_outside(colour_features(rgb, check), check)    # names of features out of bounds
    []
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

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


def tissue_mask(rgb: np.ndarray, check: ColourCheck | None = None) -> np.ndarray:
    """Boolean H x W mask of pixels that are not background (bright unsaturated glass, or black).

    Thresholds come from the model's fitted colour check when it has one, else the check's
    defaults, so "background" means the same to the field cutter as to the colour check.
    """
    defaults = ColourCheck.__dataclass_fields__
    white = check.white_value if check else int(defaults["white_value"].default)
    black = check.black_value if check else int(defaults["black_value"].default)
    grey = check.grey_saturation if check else int(defaults["grey_saturation"].default)
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV)
    return tissue_pixels(hsv, white_value=white, black_value=black, grey_saturation=grey)
