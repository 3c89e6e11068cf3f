"""The field map: an image with each classified field tinted in its class colour (refused: grey).

Presentation only: it draws an :class:`imageclf.core.verdict.ImageAnalysis`'s fields; the Space's
``/predict_tiles`` and the UI show it.

Example:
    >>> tile_map = render_tile_map(analysis.view, analysis.fields)   # RGB uint8, class colours
"""
from __future__ import annotations

import cv2
import numpy as np

from imageclf.core.fields import FieldGrid

MAX_MAP_SIDE = 1600       # the map is drawn at most this large (px)
# Okabe-Ito colours, distinguishable with the common colour-vision deficiencies. Ordered so the
# first three (orange, dark blue, yellow) differ in lightness too and stand out on purple H&E;
# sky blue and bluish green looked alike on tissue.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 159, 0), (0, 114, 178), (240, 228, 66), (204, 121, 167),
    (86, 180, 233), (213, 94, 0), (0, 158, 115),
)
ABSTAIN_COLOUR = (128, 128, 128)

__all__ = ["ABSTAIN_COLOUR", "PALETTE", "class_colour", "render_tile_map"]


def class_colour(index: int) -> tuple[int, int, int]:
    """RGB colour of class ``index`` on the tile map (colour-blind safe for up to 7 classes)."""
    if index < len(PALETTE):
        return PALETTE[index]
    hue = int((index * 0.618034 % 1.0) * 180)  # golden-ratio hues beyond the palette
    hsv = np.array([[[hue, 200, 230]]], np.uint8)
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def render_tile_map(rgb: np.ndarray, analysis: FieldGrid, *, opacity: float = 0.45,
                    max_side: int = MAX_MAP_SIDE, grey: bool = False) -> np.ndarray:
    """The image with each classified tile tinted in its class colour (abstained: grey).

    ``grey``: draw every classified tile grey (for an image that got no answer as a whole).
    Background tiles are left as they are; tissue tiles left out by the cap get an outline only.
    The map is drawn at most ``max_side`` px on its longer side.
    """
    scale = min(1.0, max_side / max(rgb.shape[:2]))
    base = rgb if scale == 1.0 else cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    layer = base.astype(np.float32).copy()
    alpha = np.zeros(base.shape[:2] + (1,), np.float32)
    th, tw = analysis.tile_size
    boxes = []
    for tile_ in analysis.cells:
        y0, x0 = int(tile_.y * scale), int(tile_.x * scale)
        y1, x1 = int((tile_.y + th) * scale), int((tile_.x + tw) * scale)
        if tile_.status == "classified":
            colour = ABSTAIN_COLOUR if grey or tile_.abstained else class_colour(int(tile_.class_index))
            layer[y0:y1, x0:x1] = colour
            alpha[y0:y1, x0:x1] = opacity
            boxes.append(((x0, y0), (x1 - 1, y1 - 1), colour))
        elif tile_.status == "tissue":
            boxes.append(((x0, y0), (x1 - 1, y1 - 1), (255, 255, 255)))
    out = (base.astype(np.float32) * (1.0 - alpha) + layer * alpha).round().astype(np.uint8)
    for top_left, bottom_right, colour in boxes:
        cv2.rectangle(out, top_left, bottom_right, colour, 1)
    return out
