"""The slide heatmap: the thumbnail with each scored field tinted in its class colour, and a legend.

Presentation only, in the core field map's colours (``imageclf.field_map``: colour-blind-safe
class colours, grey for a field the refusal rule refused). As on the core map, a slide refused as
a whole is drawn with grey fields only: no class colour for what is not answered. Below the map: the
verdict, one swatch per class with its share of the scored tissue, and a 1 mm scale bar.

Example:
    >>> png = render_heatmap(result)          # RGB uint8, at most MAX_SIDE px wide or high, plus legend
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from imageclf.field_map import ABSTAIN_COLOUR, class_colour

if TYPE_CHECKING:  # types only
    from imageclf.slides.results import SlideResult

MAX_SIDE = 2048           # the map's longer side, in pixels
OPACITY = 0.45
FONT = cv2.FONT_HERSHEY_SIMPLEX
INK = (20, 20, 20)

__all__ = ["render_heatmap", "MAX_SIDE"]


def render_heatmap(result: SlideResult, *, max_side: int = MAX_SIDE) -> np.ndarray:
    """The thumbnail with the fields tinted, above a legend (RGB uint8)."""
    thumbnail = result.thumbnail
    scale = min(1.0, max_side / max(thumbnail.shape[:2]))
    base = thumbnail if scale == 1.0 else cv2.resize(thumbnail, None, fx=scale, fy=scale,
                                                     interpolation=cv2.INTER_AREA)
    per_level0 = scale / result.thumbnail_downsample           # map pixels per level-0 pixel
    layer, alpha = base.astype(np.float32), np.zeros(base.shape[:2] + (1,), np.float32)
    fields, refused = result.fields, result.verdict.abstained
    for box, top, reason in zip(fields.boxes, fields.top, fields.reasons, strict=True):
        x, y, w, h = (float(v) * per_level0 for v in box)
        x0, y0, x1, y1 = int(x), int(y), max(int(x) + 1, int(x + w)), max(int(y) + 1, int(y + h))
        colour = ABSTAIN_COLOUR if refused or reason is not None else class_colour(int(top))
        layer[y0:y1, x0:x1] = colour
        alpha[y0:y1, x0:x1] = OPACITY
    tinted = (base.astype(np.float32) * (1 - alpha) + layer * alpha).round().astype(np.uint8)
    return np.vstack([tinted, _legend(result, tinted.shape[1], per_level0)])


def _legend(result: SlideResult, width: int, per_level0: float) -> np.ndarray:
    """White strip: the verdict, class swatches with tissue shares, not recognised, a 1 mm bar."""
    size = max(0.4, min(0.8, width / 1400))
    line = int(34 * size / 0.6)
    spec, fields = result.model.spec, result.fields
    answered, top = fields.answered, fields.top
    weights = fields.tissue * fields.boxes[:, 2] * fields.boxes[:, 3] if len(fields) else np.zeros(0)
    total = float(weights.sum()) or 1.0
    refused = result.verdict.abstained
    entries = [] if refused else [
        (class_colour(i), f"{name} {weights[answered & (top == i)].sum() / total:.0%}")
        for i, name in enumerate(spec.names)]
    entries.append((ABSTAIN_COLOUR, f"Not recognised {weights[~answered].sum() / total:.0%}" if len(fields)
                    else "Not recognised"))
    rows = _wrap(_verdict_line(result), width - 20, size)
    strip_rows = len(rows) + 1 + _wrap_count(entries, width, size)
    strip = np.full((line * strip_rows + line // 2, width, 3), 255, np.uint8)
    for index, text in enumerate(rows):
        cv2.putText(strip, text, (10, int(line * (index + 0.75))), FONT, size, INK, 1, cv2.LINE_AA)
    x, y = 10, line * len(rows) + int(line * 0.1)
    for colour, text in entries:
        text_w = cv2.getTextSize(text, FONT, size, 1)[0][0]
        if x + line + text_w > width - 10 and x > 10:
            x, y = 10, y + line
        cv2.rectangle(strip, (x, y + 4), (x + line - 12, y + line - 8), colour, -1)
        cv2.putText(strip, text, (x + line - 4, y + int(line * 0.7)), FONT, size, INK, 1, cv2.LINE_AA)
        x += line + text_w + 20
    _scale_bar(strip, result, per_level0, size, line)
    return strip


def _verdict_line(result: SlideResult) -> str:
    name = result.path.name
    verdict = result.verdict
    if verdict.abstained:
        return f"{name}: not recognised ({verdict.abstain_code}). {verdict.abstain_reason}"
    answered = int(result.fields.answered.sum())
    return f"{name}: {verdict.name} {verdict.confidence:.0%} (mean over {answered} fields)"


def _wrap(text: str, width: int, size: float) -> list[str]:
    """``text`` cut into lines at most ``width`` pixels wide, at spaces."""
    lines: list[str] = []
    for word in text.split():
        trial = f"{lines[-1]} {word}" if lines else word
        if lines and cv2.getTextSize(trial, FONT, size, 1)[0][0] <= width:
            lines[-1] = trial
        else:
            lines.append(word)
    return lines or [""]


def _wrap_count(entries: list[tuple[tuple[int, int, int], str]], width: int, size: float) -> int:
    rows, x = 1, 10
    line = int(34 * size / 0.6)
    for _, text in entries:
        text_w = cv2.getTextSize(text, FONT, size, 1)[0][0]
        if x + line + text_w > width - 10 and x > 10:
            rows, x = rows + 1, 10
        x += line + text_w + 20
    return rows


def _scale_bar(strip: np.ndarray, result: SlideResult, per_level0: float, size: float, line: int) -> None:
    mpp = result.scale.mpp
    if mpp is None:
        return
    for microns in (5000, 2000, 1000, 500, 200, 100):
        length = int(microns / mpp * per_level0)
        if length <= strip.shape[1] // 4:
            break
    y = strip.shape[0] - line // 2
    x1 = strip.shape[1] - 10
    cv2.line(strip, (x1 - length, y), (x1, y), INK, 3)
    label = f"{microns / 1000:g} mm" if microns >= 1000 else f"{microns} um"
    text_w = cv2.getTextSize(label, FONT, size, 1)[0][0]
    cv2.putText(strip, label, (x1 - length // 2 - text_w // 2, y - 8), FONT, size, INK, 1, cv2.LINE_AA)
