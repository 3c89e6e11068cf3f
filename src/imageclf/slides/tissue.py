"""The tissue mask of a slide, found on its thumbnail: background, pen marks and glass left out.

Tissue is stained, so it is saturated and glass is not: the saturation threshold is Otsu's on the
thumbnail (clamped to ``SATURATION_BOUNDS``, so a blank slide does not split its own noise), and
the colour check's background rule (``imageclf.core.colour.tissue_mask``: bright grey glass, black)
applies on top. Marker ink is saturated too but green to blue (``PEN_HUES``), unlike haematoxylin
and eosin (purple to pink). Then morphology at a physical size (close ``CLOSE_UM``, open
``OPEN_UM``), holes smaller than the minimum area filled, and pieces smaller than ``min_area_um2``
dropped (dust, debris).

Example:
    >>> tissue = find_tissue(thumbnail, downsample=8.0, mpp=0.25)
    >>> tissue.area_mm2, tissue.shares(np.array([0]), np.array([0]), 358, 358)
    (12.4, 0.0)
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from imageclf.core.colour import ColourCheck, tissue_mask

MIN_AREA_UM2 = 20_000.0        # 0.02 mm2 (a 140 um square): smaller pieces are dust or debris
SATURATION_BOUNDS = (15, 60)   # Otsu's saturation threshold is kept inside these (0-255)
PEN_HUES = (35, 128)           # OpenCV hue (0-179): green to blue marker ink; H&E is purple to pink
PEN_SATURATION = 50            # ink is strongly coloured
CLOSE_UM, OPEN_UM = 16.0, 8.0  # morphology radii in microns
PIXEL_RADIUS = 2               # radius when the pixel size is unknown
MASK_UM_PER_PX = 2.0           # the finest mask worth computing (a field is 80+ um wide)

__all__ = ["TissueMap", "find_tissue", "MIN_AREA_UM2", "MASK_UM_PER_PX"]


@dataclass(frozen=True, eq=False)
class TissueMap:
    """A boolean mask over the slide; one mask pixel covers ``downsample`` level-0 pixels a side."""

    mask: np.ndarray
    downsample: float
    mpp: float | None            # microns per level-0 pixel (None: unknown, no area in mm2)
    threshold: float             # the saturation threshold used
    pen_pixels: int = 0          # mask pixels left out as marker ink

    @property
    def area_mm2(self) -> float | None:
        if self.mpp is None:
            return None
        side_um = self.downsample * self.mpp
        return float(self.mask.sum()) * side_um * side_um / 1e6

    def shares(self, xs: np.ndarray, ys: np.ndarray, width: float, height: float) -> np.ndarray:
        """Tissue share of each level-0 box (xs[i], ys[i], width, height), by the mask's integral image."""
        d, (rows, cols) = self.downsample, self.mask.shape
        top = np.clip(np.floor(np.asarray(ys) / d).astype(np.int64), 0, rows - 1)
        left = np.clip(np.floor(np.asarray(xs) / d).astype(np.int64), 0, cols - 1)
        bottom = np.clip(np.ceil((np.asarray(ys) + height) / d).astype(np.int64), top + 1, rows)
        right = np.clip(np.ceil((np.asarray(xs) + width) / d).astype(np.int64), left + 1, cols)
        integral = cv2.integral(self.mask.astype(np.uint8)).astype(np.int64)
        total = integral[bottom, right] - integral[top, right] - integral[bottom, left] + integral[top, left]
        return total / ((bottom - top) * (right - left))

    def richest(self, side: int, count: int) -> list[tuple[int, int]]:
        """Level-0 top-left corners of up to ``count`` non-overlapping ``side`` x ``side`` windows
        with the most tissue (each at least half tissue), richest first."""
        cell = max(1, int(round(side / self.downsample)))
        height, width = self.mask.shape
        integral = cv2.integral(self.mask.astype(np.uint8))
        candidates = []
        for top in range(0, max(1, height - cell + 1), max(1, cell // 2)):
            for left in range(0, max(1, width - cell + 1), max(1, cell // 2)):
                bottom, right = min(top + cell, height), min(left + cell, width)
                total = integral[bottom, right] - integral[top, right] - integral[bottom, left] + integral[top, left]
                candidates.append((total / (cell * cell), top, left))
        picked: list[tuple[int, int]] = []
        for share, top, left in sorted(candidates, reverse=True):
            if share < 0.5 or len(picked) == count:
                break
            if all(abs(top - t) >= cell or abs(left - c) >= cell for t, c in picked):
                picked.append((top, left))
        return [(int(left * self.downsample), int(top * self.downsample)) for top, left in picked]


def find_tissue(thumbnail: np.ndarray, *, downsample: float, mpp: float | None,
                check: ColourCheck | None = None, min_area_um2: float = MIN_AREA_UM2) -> TissueMap:
    """The tissue mask of ``thumbnail`` (RGB uint8, ``downsample`` level-0 pixels per pixel).

    ``mpp``: microns per level-0 pixel (``None``: unknown; morphology and the minimum area then
    work in thumbnail pixels). ``check``: the model's colour check, whose background rule applies.
    """
    hsv = cv2.cvtColor(np.ascontiguousarray(thumbnail), cv2.COLOR_RGB2HSV)
    hue, saturation = hsv[..., 0], hsv[..., 1]
    otsu, _ = cv2.threshold(saturation, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    threshold = float(np.clip(otsu, *SATURATION_BOUNDS))
    pen = (hue >= PEN_HUES[0]) & (hue <= PEN_HUES[1]) & (saturation >= PEN_SATURATION)
    mask = (saturation > threshold) & tissue_mask(thumbnail, check) & ~pen
    mask_um = None if mpp is None else downsample * mpp
    close_r, open_r = ((PIXEL_RADIUS, max(1, PIXEL_RADIUS // 2)) if mask_um is None
                       else (_radius(CLOSE_UM, mask_um), _radius(OPEN_UM, mask_um)))
    mask = _morph(mask, cv2.MORPH_CLOSE, close_r)
    mask = _morph(mask, cv2.MORPH_OPEN, open_r)
    min_pixels = (4 * PIXEL_RADIUS) ** 2 if mask_um is None else min_area_um2 / (mask_um * mask_um)
    mask = ~_drop_small(~mask, min_pixels)      # fill small holes (nuclei gaps), keep lumens
    mask = _drop_small(mask, min_pixels)        # drop dust and debris
    return TissueMap(mask, float(downsample), mpp, threshold, int(pen.sum()))


def _radius(microns: float, mask_um: float) -> int:
    return int(round(microns / mask_um))


def _morph(mask: np.ndarray, op: int, radius: int) -> np.ndarray:
    if radius < 1:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.morphologyEx(mask.astype(np.uint8), op, kernel).astype(bool)


def _drop_small(mask: np.ndarray, min_pixels: float) -> np.ndarray:
    """``mask`` without its 8-connected pieces of fewer than ``min_pixels`` pixels."""
    if min_pixels <= 1 or not mask.any():
        return mask
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_pixels
    keep[0] = False    # label 0 is the other side
    return keep[labels]
