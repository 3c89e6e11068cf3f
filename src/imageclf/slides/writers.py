"""A scored slide's files: fields.csv, fields.geojson and regions.geojson (QuPath), heatmap.png, tissue.png,
summary.json.

Presentation only: everything here reads a :class:`~imageclf.slides.results.SlideResult` (or an
``ImageResult`` for a plain image: analysis.json + summary.json). Every file is written to a
temporary name and moved into place with ``os.replace``, and summary.json comes last: a slide
folder whose summary.json lists files that all exist, for the same source file (size and
modification time), is complete, and a rerun skips it (:func:`outputs_complete`). summary.json
carries the run metadata the caller passes (``imageclf.provenance.run_metadata``: code version,
package versions, the model's repo, revision and sha256) beside the model's own facts, and the slide's
class composition by area and region count per class (:mod:`imageclf.slides.regions`, which also
makes regions.geojson: one annotation per connected region of a class).

Example:
    >>> written = write_outputs(result, Path("out") / "CMU-1-Small-Region", provenance=metadata)
    >>> written["outputs"], written["model"]["sha256"][:12]
    (['fields.csv', 'fields.geojson', 'regions.geojson', 'heatmap.png', 'tissue.png'], '5c7b1e0d2a9f')
"""
from __future__ import annotations

import csv
import io
import json
import os
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from imageclf.field_map import ABSTAIN_COLOUR, class_colour
from imageclf.slides.heatmap import render_heatmap
from imageclf.slides.regions import Region, class_regions, composition, region_counts, regions_geojson
from imageclf.slides.results import ImageResult, SlideResult
from imageclf.slides.tissue import MIN_AREA_UM2

FORMAT = "imageclf-slide/1"
SUMMARY = "summary.json"
ERROR = "error.json"
SLIDE_FILES = ("fields.csv", "fields.geojson", "regions.geojson", "heatmap.png", "tissue.png")
IMAGE_FILES = ("analysis.json",)
NOT_RECOGNISED = "Not recognised"

__all__ = ["FORMAT", "SUMMARY", "ERROR", "atomic_write", "outputs_complete", "summary",
           "write_failure", "write_outputs", "fields_csv", "fields_geojson"]


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def source_stamp(path: Path) -> dict[str, int]:
    stat = path.stat()
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def outputs_complete(dest: Path, source: Path) -> bool:
    """True when ``dest`` holds a summary for this very ``source`` file and every file it lists."""
    try:
        data = json.loads((dest / SUMMARY).read_text(encoding="utf-8"))
        same = data.get("format") == FORMAT and data.get("source") == source_stamp(source)
        return same and all((dest / name).is_file() for name in data.get("outputs", []))
    except (OSError, ValueError, AttributeError):
        return False


def write_outputs(result: SlideResult | ImageResult, dest: Path, *, provenance: dict[str, Any],
                  heatmap: np.ndarray | None = None) -> dict[str, Any]:
    """Write every output of one slide (or image) into ``dest``; summary.json last. Returns the summary
    written (its ``outputs``: the other files), so a caller that shows it need not read it back.

    ``provenance``: the run metadata (``imageclf.provenance.run_metadata``); ``heatmap``:
    ``render_heatmap(result)`` when the caller has already drawn it (the Space shows it too).
    """
    dest.mkdir(parents=True, exist_ok=True)
    regions: list[Region] | None = None          # made once: regions.geojson and summary.json's counts
    if isinstance(result, ImageResult):
        atomic_write(dest / "analysis.json", json.dumps(result.analysis.to_json(), indent=2) + "\n")
        names = list(IMAGE_FILES)
    else:
        atomic_write(dest / "fields.csv", fields_csv(result))
        atomic_write(dest / "fields.geojson", json.dumps(fields_geojson(result)) + "\n")
        regions = class_regions(result)
        atomic_write(dest / "regions.geojson", json.dumps(regions_geojson(result, regions=regions)) + "\n")
        atomic_write(dest / "heatmap.png", _png(render_heatmap(result) if heatmap is None else heatmap))
        atomic_write(dest / "tissue.png", _png(result.tissue.mask.astype(np.uint8) * 255))
        names = list(SLIDE_FILES)
    (dest / ERROR).unlink(missing_ok=True)
    written = summary(result, outputs=names, provenance=provenance, regions=regions)
    atomic_write(dest / SUMMARY, json.dumps(written, indent=2) + "\n")
    return written


def write_failure(dest: Path, source: Path, sentence: str) -> None:
    """error.json for a slide that could not be scored (a rerun tries it again)."""
    atomic_write(dest / ERROR, json.dumps({"format": FORMAT, "slide": str(source), "error": sentence}, indent=2) + "\n")


def summary(result: SlideResult | ImageResult, *, outputs: list[str], provenance: dict[str, Any],
            regions: list[Region] | None = None) -> dict[str, Any]:
    """summary.json: the file, its scale and source, tissue, fields, class composition and regions per
    class (slides), verdict, stain normalisation, model (with its repo, revision and sha256), code
    version, package versions, timings. ``regions``: ``class_regions(result)`` when already made."""
    common = {"format": FORMAT, "source": source_stamp(result.path),
              "model": {**result.model.to_dict(), **provenance["model"]},
              "code_version": provenance["code_version"], "packages": provenance["packages"],
              "timings": {k: round(v, 3) for k, v in result.timings.items()}, "outputs": outputs}
    if isinstance(result, ImageResult):
        answer = result.analysis.to_json()
        return {"kind": "image", "slide": {"file": result.path.name, "path": str(result.path.resolve()),
                                           "bytes": result.path.stat().st_size},
                "scale": {**result.scale.to_dict(), "decision": answer["scale"]},
                "verdict": result.analysis.verdict.to_json(),
                "stain_normalisation": answer.get("stain_normalisation"),
                "fields": answer["fields"], **common}
    fields, spec = result.fields, result.model.spec
    reasons = Counter(r.value for r in fields.reasons if r is not None)
    reading = result.reading
    return {
        "kind": "slide", "slide": result.slide,
        "scale": {**result.scale.to_dict(), "model_um_per_px": round(result.model.mpp, 4),
                  "level_read": reading.get("level"), "level_um_per_px": reading.get("level_um_per_px"),
                  "field_level0_px": reading.get("field_level0_px"), "field_level_px": reading.get("field_level_px"),
                  "heatmap_downsample": round(result.thumbnail_downsample, 4)},
        "tissue": {"area_mm2": None if result.tissue.area_mm2 is None else round(result.tissue.area_mm2, 4),
                   "mask_downsample": round(result.tissue.downsample, 4), "mask_png": "tissue.png",
                   "saturation_threshold": result.tissue.threshold, "pen_pixels": result.tissue.pen_pixels,
                   "min_piece_um2": MIN_AREA_UM2, "min_field_share": spec.refusal.min_tissue},
        "fields": {"grid": reading.get("grid"), "total": reading.get("grid_fields", 0),
                   "tissue": reading.get("tissue_fields", 0), "classified": len(fields),
                   "answered": int(fields.answered.sum()), "abstained": int(sum(reasons.values())),
                   "reasons": dict(sorted(reasons.items()))},
        "composition": composition(result),
        "regions": region_counts(class_regions(result) if regions is None else regions, spec.class_ids),
        "verdict": result.verdict.to_json(),
        "stain_normalisation": None if result.stain is None else result.stain.to_dict(), **common,
    }


def fields_csv(result: SlideResult) -> str:
    """One row per scored field: level-0 box, tissue share, probabilities, label (class id), name (class
    name), abstained, reason (the refusal code)."""
    spec, fields = result.model.spec, result.fields
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["x", "y", "width", "height", "tissue", *(f"p_{cid}" for cid in spec.class_ids), "label",
                     "name", "abstained", "reason"])
    for box, share, probs, top, reason in zip(fields.boxes, fields.tissue, fields.probabilities, fields.top,
                                              fields.reasons, strict=True):
        writer.writerow([*(int(v) for v in box), f"{share:.4f}", *(f"{p:.6f}" for p in probs),
                         "" if reason is not None else spec.class_ids[int(top)],
                         "" if reason is not None else spec.names[int(top)], int(reason is not None),
                         "" if reason is None else reason.value])
    return out.getvalue()


def fields_geojson(result: SlideResult) -> dict[str, Any]:
    """A FeatureCollection QuPath imports as detections: one polygon per field in level-0 pixels,
    classified by class name and colour (refused fields: "Not recognised", grey, with their code)."""
    spec, fields = result.model.spec, result.fields
    features = []
    for box, share, probs, top, reason in zip(fields.boxes, fields.tissue, fields.probabilities, fields.top,
                                              fields.reasons, strict=True):
        x, y, w, h = (int(v) for v in box)
        name, colour = ((spec.names[int(top)], class_colour(int(top))) if reason is None
                        else (NOT_RECOGNISED, ABSTAIN_COLOUR))
        properties: dict[str, Any] = {
            "objectType": "detection", "isLocked": True,
            "classification": {"name": name, "color": list(colour)},
            "measurements": {**{f"p({n})": round(float(p), 6) for n, p in zip(spec.names, probs, strict=True)},
                             "tissue share": round(float(share), 4)},
            "abstained": reason is not None, "label": None if reason is not None else spec.class_ids[int(top)]}
        if reason is not None:
            properties.update(name=reason.value, metadata={"abstain_code": reason.value})
        features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [
            [[x, y], [x + w, y], [x + w, y + h], [x, y + h], [x, y]]]}, "properties": properties})
    return {"type": "FeatureCollection", "features": features}


def _png(image: np.ndarray) -> bytes:
    pixels = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", pixels)
    if not ok:
        raise OSError("PNG encoding failed.")
    return encoded.tobytes()
