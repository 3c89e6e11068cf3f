"""The slide heatmap: the thumbnail with each scored field tinted in its class colour, and a legend.

Presentation only, in the core field map's colours (``imageclf.field_map``: colour-blind-safe
class colours, grey for a field the refusal rule refused). Every answered field is drawn in its class
colour whatever the slide's verdict: a slide refused as a whole (too many fields refused) still shows
where its answered fields lie and what they say, as its regions.geojson does; its refused fields are
grey. Below the map: the slide verdict on its own line(s), then "Fields:" with one swatch per class
and one for not recognised, each with its share of the scored field area (``regions.composition``,
the shares summary.json gives), and a 1 mm scale bar.

Example:
    >>> png = render_heatmap(result)          # RGB uint8, at most MAX_SIDE px wide or high, plus legend
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from imageclf.field_map import ABSTAIN_COLOUR, class_colour
from imageclf.slides.regions import NOT_RECOGNISED, composition

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
    fields = result.fields
    for box, top, reason in zip(fields.boxes, fields.top, fields.reasons, strict=True):
        x, y, w, h = (float(v) * per_level0 for v in box)
        x0, y0, x1, y1 = int(x), int(y), max(int(x) + 1, int(x + w)), max(int(y) + 1, int(y + h))
        # The field's own answer, not the slide's: a refused slide's answered fields keep their colour.
        colour = ABSTAIN_COLOUR if reason is not None else class_colour(int(top))
        layer[y0:y1, x0:x1] = colour
        alpha[y0:y1, x0:x1] = OPACITY
    tinted = (base.astype(np.float32) * (1 - alpha) + layer * alpha).round().astype(np.uint8)
    return np.vstack([tinted, _legend(result, tinted.shape[1], per_level0)])


def _legend(result: SlideResult, width: int, per_level0: float) -> np.ndarray:
    """White strip: the slide verdict, then the fields' class swatches and area shares, not recognised
    included (always: they describe the fields, not the verdict), and a 1 mm bar."""
    size = max(0.4, min(0.8, width / 1400))
    line = int(34 * size / 0.6)
    shares, spec = composition(result), result.model.spec
    entries: list[tuple[tuple[int, int, int] | None, str]] = [(None, "Fields:")]
    if shares[NOT_RECOGNISED]["share"] is None:
        entries.append((None, "none scored"))
    else:
        entries += [(class_colour(i), f"{name} {shares[cid]['share']:.0%}")
                    for i, (cid, name) in enumerate(zip(spec.class_ids, spec.names, strict=True))]
        entries.append((ABSTAIN_COLOUR, f"Not recognised {shares[NOT_RECOGNISED]['share']:.0%}"))
    rows = _wrap(_verdict_line(result), width - 20, size)
    places, entry_rows = _place(entries, width, size, line)
    strip = np.full((line * (len(rows) + entry_rows + 1) + line // 2, width, 3), 255, np.uint8)
    for index, text in enumerate(rows):
        cv2.putText(strip, text, (10, int(line * (index + 0.75))), FONT, size, INK, 1, cv2.LINE_AA)
    top = line * len(rows) + int(line * 0.1)
    for (colour, text), (x, row) in zip(entries, places, strict=True):
        y = top + row * line
        if colour is not None:
            cv2.rectangle(strip, (x, y + 4), (x + line - 12, y + line - 8), colour, -1)
            x += line - 4
        cv2.putText(strip, text, (x, y + int(line * 0.7)), FONT, size, INK, 1, cv2.LINE_AA)
    _scale_bar(strip, result, per_level0, size, line)
    return strip


def _verdict_line(result: SlideResult) -> str:
    verdict, name = result.verdict, result.path.name
    if verdict.abstained:
        return f"Slide verdict for {name}: not recognised ({verdict.abstain_code}). {verdict.abstain_reason}"
    answered = int(result.fields.answered.sum())
    return f"Slide verdict for {name}: {verdict.name} {verdict.confidence:.0%} (mean over {answered} answered fields)"


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


def _place(entries: list[tuple[tuple[int, int, int] | None, str]], width: int, size: float,
           line: int) -> tuple[list[tuple[int, int]], int]:
    """Each entry's left edge and row, filled left to right and wrapped at ``width``; and the row count."""
    places, x, row = [], 10, 0
    for colour, text in entries:
        entry_w = (0 if colour is None else line - 4) + cv2.getTextSize(text, FONT, size, 1)[0][0]
        if x + entry_w > width - 10 and x > 10:
            x, row = 10, row + 1
        places.append((x, row))
        x += entry_w + 20
    return places, row + 1


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
