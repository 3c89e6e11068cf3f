"""What the slide viewer shows besides the slide's own tiles, made once from a scored slide's files.

Read from the results folder the command line's own function wrote (``summary.json``,
``fields.csv``): presentation after inference, nothing recomputed. Three files land beside them:

- ``overlay.png``: the field map as one RGBA image over the whole of level 0 (OpenSeadragon stretches
  it over the slide and sets its opacity): each answered field in its class colour, refused fields
  grey, **whatever the slide's verdict** (the verdict is stated separately, above the viewer);
- ``fields.json``: every field's level-0 box, class, probabilities and refusal code, for the viewer's
  hover and click read-out;
- ``viewer.json``: the page's facts: slide size, classes and colours, the verdict, the scale.

Example:
    >>> write_assets(Path("slide-views/9f.../results"), dimensions=(2220, 2967))
    {'overlay': (2220, 2967), 'fields': 109}
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from imageclf.field_map import ABSTAIN_COLOUR, class_colour
from imageclf.slides.writers import atomic_write

OVERLAY_SIDE = 4096        # the overlay's longer side at most; a field is still several pixels wide
EDGE = 0.06                # a field's outline, as a share of its side: neighbours of one class stay apart
OVERLAY, FIELDS, PAGE = "overlay.png", "fields.json", "viewer.json"

__all__ = ["write_assets", "OVERLAY", "FIELDS", "PAGE"]


def write_assets(results: Path, *, dimensions: tuple[int, int]) -> dict[str, Any]:
    """Write overlay.png, fields.json and viewer.json into ``results``; returns their sizes."""
    summary = json.loads((results / "summary.json").read_text(encoding="utf-8"))
    fields = _read_fields(results / "fields.csv", summary)
    width, height = dimensions
    downsample = max(1.0, max(width, height) / OVERLAY_SIDE)
    overlay = _overlay(fields, (round(width / downsample), round(height / downsample)), downsample)
    ok, png = cv2.imencode(".png", cv2.cvtColor(overlay, cv2.COLOR_RGBA2BGRA))
    if not ok:
        raise OSError("PNG encoding failed.")
    atomic_write(results / OVERLAY, png.tobytes())
    atomic_write(results / FIELDS, json.dumps({"fields": fields}, separators=(",", ":")))
    atomic_write(results / PAGE, json.dumps(_page(summary, dimensions), indent=1))
    return {"overlay": overlay.shape[1::-1], "fields": len(fields)}


def _read_fields(path: Path, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """fields.csv as the viewer reads it: box, class index (-1: refused), probabilities, reason."""
    ids = list(summary["model"]["classes"])
    rows = []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            refused = row["abstained"] == "1"
            rows.append({"box": [int(row[k]) for k in ("x", "y", "width", "height")],
                         "class": -1 if refused else ids.index(row["label"]),
                         "p": [round(float(row[f"p_{cid}"]), 4) for cid in ids],
                         "tissue": round(float(row["tissue"]), 3), "reason": row["reason"] or None})
    return rows


def _overlay(fields: list[dict[str, Any]], size: tuple[int, int], downsample: float) -> np.ndarray:
    """RGBA: transparent where no field was scored, else the field's colour with a darker outline."""
    width, height = size
    image = np.zeros((height, width, 4), np.uint8)
    for field in fields:
        x, y, w, h = (v / downsample for v in field["box"])
        colour = ABSTAIN_COLOUR if field["class"] < 0 else class_colour(field["class"])
        x0, y0 = int(round(x)), int(round(y))
        x1, y1 = max(x0 + 1, int(round(x + w))), max(y0 + 1, int(round(y + h)))
        # The outline reaches one pixel further: the field grid's rounding leaves one-pixel gaps between
        # neighbours, which would show as bright seams; a neighbour drawn later covers the extra pixel.
        image[y0:y1 + 1, x0:x1 + 1] = (*(int(c * 0.55) for c in colour), 255)
        edge = max(1, int(round(min(x1 - x0, y1 - y0) * EDGE))) if min(x1 - x0, y1 - y0) > 4 else 0
        image[y0 + edge:y1 - edge, x0 + edge:x1 - edge] = (*colour, 255)
    return image


def _page(summary: dict[str, Any], dimensions: tuple[int, int]) -> dict[str, Any]:
    model, verdict, scale = summary["model"], summary["verdict"], summary["scale"]
    return {
        "file": summary["slide"].get("file"), "dimensions": list(dimensions),
        "classes": [{"id": cid, "name": name, "colour": list(class_colour(i))}
                    for i, (cid, name) in enumerate(zip(model["classes"], model["names"], strict=True))],
        "refused_colour": list(ABSTAIN_COLOUR), "verdict": verdict,
        "um_per_px": scale.get("um_per_px"), "scale_source": scale.get("source"),
        "fields": summary["fields"], "model": model.get("name"),
    }
