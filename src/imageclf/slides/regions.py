"""A scored slide's class regions (QuPath annotations) and its class composition by area.

A class's region is the union of the boxes of the answered fields whose top class it is, split into
its connected polygons (holes kept). Refused fields are in no class region: they make up the
``not_recognised`` area. Answered fields are answered whatever the slide's verdict, so a slide refused
as a whole (too many fields refused) still has regions for the fields that were answered; the verdict
says what the slide as a whole is, the regions where each answer lies.

Geometry, decided once here:

- Level-0 pixels, like fields.geojson. The field grid's corners are rounded to the pixel grid of the
  level read, which leaves one-pixel gaps and overlaps between neighbouring fields; left as they are,
  they would cut a block of fields into strips. So a field's right and bottom edges are first moved
  onto the nearest field's left or top edge when that lies within ``SNAP_SHARE`` of a field side (a
  real gap is a whole field wide: a field left out for want of tissue).
- Fields that only touch at a corner share no edge: they are separate regions (the union of their
  boxes is two polygons; QuPath would draw one object with a pinch otherwise).
- Overlapping boxes count once (a union). Fields of two kinds can overlap where the grid's last row
  and column are aligned to the slide's edge: that overlap counts for each kind, so composition shares
  are of the sum of the kinds' areas and always sum to 1.

Example:
    >>> result = score_slide("TCGA-CR-7395-01A-01-TS1.svs", model)    # refused: 920 of 933 fields
    >>> [(r.class_id, r.fields, round(r.area_mm2, 4)) for r in class_regions(result)][:2]
    [('lung_scc', 1, 0.0068), ('lung_scc', 1, 0.0068)]
    >>> composition(result)["lung_scc"]
    {'area_mm2': 0.088504, 'share': 0.0142}
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from shapely.geometry import Polygon, mapping
from shapely.geometry.base import BaseGeometry
from shapely.geometry.polygon import orient

from imageclf.field_map import class_colour

if TYPE_CHECKING:  # types only
    from imageclf.slides.results import SlideResult

SNAP_SHARE = 0.05      # edges this close (share of a field side) are one edge: the grid's rounding
MIN_SNAP_PX = 2        # ... and at least this many level-0 pixels
NOT_RECOGNISED = "not_recognised"
BASIS = ("areas are unions of field boxes (overlapping edges count once): a class, its answered fields of that "
         "top class whatever the slide verdict; not_recognised, the refused fields; shares are of their sum")

__all__ = ["BASIS", "NOT_RECOGNISED", "Region", "class_regions", "composition", "region_counts", "regions_geojson"]


@dataclass(frozen=True)
class Region:
    """One connected region of one class: its polygon in level-0 pixels, area, and the fields in it.

    ``area_mm2``: ``None`` when the slide's microns per pixel are unknown; ``mean_probability``: the
    mean of the class's probability over the region's fields.
    """

    class_index: int
    class_id: str
    class_name: str
    polygon: Polygon
    area_mm2: float | None
    area_px: float
    mean_probability: float
    fields: int


def class_regions(result: SlideResult) -> list[Region]:
    """Each class's connected regions of answered fields, by class (model order), then area, largest first."""
    spec, fields = result.model.spec, result.fields
    boxes = _snapped(fields.boxes)
    regions: list[Region] = []
    for index, (class_id, name) in enumerate(zip(spec.class_ids, spec.names, strict=True)):
        members = fields.answered & (fields.top == index)
        polygons = [p for p in shapely.get_parts(_union(boxes[members])) if not p.is_empty]
        if not polygons:
            continue
        # Each member's box centre lies inside its box, so inside exactly one polygon of the union.
        x0, y0, x1, y1 = boxes[members].T
        centres = shapely.points((x0 + x1) / 2, (y0 + y1) / 2)
        field_at, polygon_at = shapely.STRtree(polygons).query(centres, predicate="within")
        probabilities = fields.probabilities[members, index]
        for k, polygon in enumerate(polygons):
            mine = probabilities[field_at[polygon_at == k]]
            # orient: exterior rings counter-clockwise, holes clockwise, as GeoJSON (RFC 7946) asks.
            regions.append(Region(index, class_id, name, orient(polygon), _mm2(polygon.area, result),
                                  float(polygon.area), float(mine.mean()) if len(mine) else 0.0, len(mine)))
    return sorted(regions, key=lambda r: (r.class_index, -r.area_px))


def regions_geojson(result: SlideResult, *, regions: list[Region] | None = None) -> dict[str, Any]:
    """A FeatureCollection QuPath imports as annotations (File > Import objects): one polygon per region
    in level-0 pixels, classified by class name and colour (fields.geojson's), with its measurements.

    ``regions``: :func:`class_regions` of ``result`` when the caller has them already. Coordinates are
    integers (field boxes are); "area mm2" is left out when the slide's scale is unknown (QuPath
    measurements are numbers).
    """
    features = []
    for region in class_regions(result) if regions is None else regions:
        measurements = {"area mm2": None if region.area_mm2 is None else round(region.area_mm2, 6),
                        "mean probability": round(region.mean_probability, 6), "fields": region.fields}
        geometry = mapping(region.polygon)
        features.append({"type": "Feature", "geometry": {
            "type": geometry["type"],
            "coordinates": [[[round(x), round(y)] for x, y in ring] for ring in geometry["coordinates"]]},
            "properties": {"objectType": "annotation", "label": region.class_id,
                           "classification": {"name": region.class_name,
                                              "color": list(class_colour(region.class_index))},
                           "measurements": {k: v for k, v in measurements.items() if v is not None}}})
    return {"type": "FeatureCollection", "features": features}


def composition(result: SlideResult) -> dict[str, Any]:
    """The slide's class composition by area, for summary.json: per class id and ``not_recognised``
    its area in mm2 and share (``BASIS`` says of what), the tissue area, the scored area (the union of
    every scored field's box), and ``basis``. Areas are ``None`` when the scale is unknown (shares are
    still measured, in pixels); shares are ``None`` when no field was scored."""
    spec, fields = result.model.spec, result.fields
    boxes = _snapped(fields.boxes)
    answered, top = fields.answered, fields.top
    areas = {class_id: _union(boxes[answered & (top == index)]).area for index, class_id in enumerate(spec.class_ids)}
    areas[NOT_RECOGNISED] = _union(boxes[~answered]).area
    total = sum(areas.values())
    shares = {key: {"area_mm2": _mm2(area, result, digits=6), "share": round(area / total, 4) if total else None}
              for key, area in areas.items()}
    tissue = result.tissue.area_mm2
    return {**shares, "tissue_area_mm2": None if tissue is None else round(tissue, 4),
            "scored_area_mm2": _mm2(_union(boxes).area, result, digits=6), "basis": BASIS}


def region_counts(regions: list[Region], class_ids: tuple[str, ...] | list[str]) -> dict[str, int]:
    """How many regions each class has (every class named, 0 included), for summary.json."""
    return {class_id: sum(r.class_id == class_id for r in regions) for class_id in class_ids}


def _snapped(boxes: np.ndarray) -> np.ndarray:
    """Level-0 ``x, y, width, height`` boxes as ``x0, y0, x1, y1``, each right (bottom) edge moved onto the
    nearest left (top) edge of any field when that is within the snap distance (the module docstring)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    x0, y0, width, height = boxes.T
    x1 = _snap(x0, x0 + width, np.maximum(MIN_SNAP_PX, SNAP_SHARE * width))
    y1 = _snap(y0, y0 + height, np.maximum(MIN_SNAP_PX, SNAP_SHARE * height))
    return np.stack([x0, y0, x1, y1], axis=1)


def _snap(starts: np.ndarray, ends: np.ndarray, tolerance: np.ndarray) -> np.ndarray:
    if not len(starts):
        return ends
    edges = np.unique(starts)
    after = np.clip(np.searchsorted(edges, ends), 0, len(edges) - 1)
    before = np.clip(after - 1, 0, len(edges) - 1)
    nearest = np.where(np.abs(edges[after] - ends) < np.abs(edges[before] - ends), edges[after], edges[before])
    return np.where((np.abs(nearest - ends) <= tolerance) & (nearest > starts), nearest, ends)


def _union(boxes: np.ndarray) -> BaseGeometry:
    """The union of ``x0, y0, x1, y1`` boxes, without the collinear vertices the overlay leaves."""
    return shapely.simplify(shapely.unary_union(shapely.box(*boxes.T)), 0) if len(boxes) else Polygon()


def _mm2(area_px: float, result: SlideResult, *, digits: int | None = None) -> float | None:
    mpp = result.scale.mpp
    if mpp is None:
        return None
    area = area_px * mpp * mpp / 1e6
    return area if digits is None else round(area, digits)
