"""Class regions (regions.geojson, QuPath annotations), class composition by area, and the heatmap of a
slide refused as a whole: geometry on hand-made field tables, then a real slide scored and written."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import shapely

from imageclf.core import pipeline
from imageclf.core.field_table import FieldTable
from imageclf.core.refusal import Reason
from imageclf.core.spec import ClassifierSpec
from imageclf.field_map import ABSTAIN_COLOUR, class_colour
from imageclf.slides.heatmap import OPACITY, render_heatmap
from imageclf.slides.physical import SlideScale
from imageclf.slides.regions import NOT_RECOGNISED, class_regions, composition, regions_geojson
from imageclf.slides.results import SlideResult
from imageclf.slides.scoring import score_slide
from imageclf.slides.slide_model import SlideModel
from imageclf.slides.tissue import TissueMap
from imageclf.slides.writers import SLIDE_FILES, SUMMARY, outputs_complete, write_outputs
from tests.conftest import HUB_MODEL, require_dataset
from tests.support.slides import tiny_slide_model_folder

SPEC = ClassifierSpec(("alpha", "beta", "gamma"), ("Alpha tissue", "Beta tissue", "Gamma tissue"), (64, 64))
CLASSES = {"a": 0, "b": 1, "g": 2}      # layout letters; "r": a refused field, ".": no field
DOWNSAMPLE = 4                           # level-0 pixels per thumbnail pixel


def hand_made(layout: list[str], *, side: int = 100, stride: float = 100.0, mpp: float | None = 0.5,
              path: Path = Path("hand.svs")) -> SlideResult:
    """A slide result whose fields are laid out as ``layout`` (one letter per grid cell) at ``stride``
    level-0 px, each ``side`` px square, with the corners rounded as the slide grid rounds them.
    Answered fields' top probability rises along the reading order, so region means differ."""
    boxes, probabilities, reasons = [], [], []
    for row, line in enumerate(layout):
        for col, letter in enumerate(line):
            if letter == ".":
                continue
            boxes.append([round(col * stride), round(row * stride), side, side])
            p = np.full(3, 0.1)
            p[CLASSES.get(letter, 0)] = 0.5 + 0.01 * len(boxes)
            probabilities.append(p / p.sum())
            reasons.append(Reason.FEATURE if letter == "r" else None)
    table = FieldTable(np.array(boxes, np.int64).reshape(-1, 4), np.ones(len(boxes)), np.array(probabilities),
                       tuple(reasons))
    height, width = (int(np.ceil((n - 1) * stride + side)) // DOWNSAMPLE for n in (len(layout), len(layout[0])))
    thumbnail = np.full((height, width, 3), 255, np.uint8)
    return SlideResult(path=path, slide={"file": path.name}, scale=SlideScale(mpp, "override", "hand-made"),
                       model=SlideModel(SPEC, None, "hand-made", "local", 0.368),
                       tissue=TissueMap(np.ones((height, width), bool), DOWNSAMPLE, mpp, 20.0),
                       thumbnail=thumbnail, thumbnail_downsample=DOWNSAMPLE, fields=table,
                       verdict=pipeline.merge(table, SPEC, one_field=False))


def box_union(boxes: np.ndarray) -> shapely.Geometry:
    """The plain union of level-0 ``x, y, width, height`` boxes, as written in fields.geojson."""
    x, y, w, h = boxes.T
    return shapely.unary_union(shapely.box(x, y, x + w, y + h))


def test_two_separated_blocks_of_one_class_are_two_regions_largest_first():
    result = hand_made(["aa..a", "aa..a", "....b"])
    regions = class_regions(result)
    assert [(r.class_id, r.fields, r.area_px) for r in regions] == [
        ("alpha", 4, 40_000.0), ("alpha", 2, 20_000.0), ("beta", 1, 10_000.0)]
    big = regions[0]
    assert big.class_name == "Alpha tissue" and big.polygon.equals(shapely.box(0, 0, 200, 200))
    assert big.area_mm2 == pytest.approx(40_000 * 0.5 ** 2 / 1e6)
    p = result.fields.probabilities[:, 0]
    assert big.mean_probability == pytest.approx(p[[0, 1, 3, 4]].mean())      # reading order: aa a / aa a / b
    assert regions[1].mean_probability == pytest.approx(p[[2, 5]].mean())


def test_a_hole_is_kept_and_refused_fields_are_in_no_region():
    result = hand_made(["aaa", "ara", "aaa"])
    [region] = class_regions(result)
    assert len(region.polygon.interiors) == 1 and region.area_px == 8 * 100 ** 2 and region.fields == 8
    assert shapely.box(100, 100, 200, 200).intersection(region.polygon).area == 0
    [feature] = regions_geojson(result)["features"]
    shell, hole = feature["geometry"]["coordinates"]                  # the hole as an interior ring
    assert shapely.Polygon(hole).area == 100 * 100 and shapely.Polygon(shell).area == 9 * 100 * 100
    refused = hand_made(["rrr", "arb"])
    regions = class_regions(refused)
    assert refused.verdict.abstain_code == "fields_refused"          # the slide is refused as a whole ...
    assert [(r.class_id, r.fields) for r in regions] == [("alpha", 1), ("beta", 1)]   # ... its answers remain
    for region in regions:
        for box in refused.fields.boxes[~refused.fields.answered]:
            x, y, w, h = box.tolist()
            assert region.polygon.intersection(shapely.box(x, y, x + w, y + h)).area == 0


def test_fields_touching_at_a_corner_are_separate_regions():
    assert [r.fields for r in class_regions(hand_made(["a.", ".a"]))] == [1, 1]


def test_the_grids_one_pixel_rounding_gaps_do_not_cut_a_block_into_strips():
    result = hand_made(["aaaaaa", "aaaaaa"], stride=100.4)          # corners 0, 100, 201, 301, 402, 502
    boxes = result.fields.boxes
    assert len(shapely.get_parts(box_union(boxes))) > 1              # the raw boxes leave gaps between columns
    [region] = class_regions(result)
    box_area = float((boxes[:, 2] * boxes[:, 3]).sum())
    assert region.fields == 12 and box_area <= region.area_px <= box_area + 2 * 100 * 2   # two 1 px gaps bridged


def test_region_areas_sum_to_each_class_union_and_shares_sum_to_one():
    # The last column is aligned to the slide's edge, as the grid does: it overlaps its neighbour by 40 px.
    grid = hand_made(["aab", "abb", "rab"])
    fields = grid.fields
    boxes = fields.boxes.copy()
    boxes[boxes[:, 0] == 200, 0] = 160
    result = dataclasses.replace(grid, fields=FieldTable(boxes, fields.tissue, fields.probabilities, fields.reasons))
    regions, shares = class_regions(result), composition(result)
    for index, class_id in enumerate(SPEC.class_ids):
        mine = boxes[fields.answered & (fields.top == index)]
        areas = sum(r.area_px for r in regions if r.class_index == index)
        assert areas == pytest.approx(box_union(mine).area)
        overlap = float((mine[:, 2] * mine[:, 3]).sum()) - areas
        assert 0 <= overlap <= 40 * 100 * len(mine)                  # only where fields of the class overlap
        assert shares[class_id]["area_mm2"] == pytest.approx(areas * 0.5 ** 2 / 1e6, abs=1e-6)
    assert sum(shares[key]["share"] for key in (*SPEC.class_ids, NOT_RECOGNISED)) == pytest.approx(1, abs=1e-3)
    assert shares[NOT_RECOGNISED]["area_mm2"] == pytest.approx(100 * 100 * 0.25 / 1e6)
    assert shares["scored_area_mm2"] == pytest.approx(260 * 300 * 0.25 / 1e6)
    assert shares["tissue_area_mm2"] == pytest.approx(result.tissue.area_mm2, abs=1e-4)
    assert "answered" in shares["basis"] and "verdict" in shares["basis"]


def test_regions_geojson_is_a_feature_collection_of_classified_annotations():
    result = hand_made(["aa.b", "a.bb", "..rr"])
    collection = json.loads(json.dumps(regions_geojson(result)))
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == 2
    for feature, region in zip(collection["features"], class_regions(result), strict=True):
        geometry, props = feature["geometry"], feature["properties"]
        assert geometry["type"] in ("Polygon", "MultiPolygon") and props["objectType"] == "annotation"
        for ring in geometry["coordinates"]:
            assert ring[0] == ring[-1] and all(isinstance(v, int) for point in ring for v in point)
        assert shapely.geometry.shape(geometry).exterior.is_ccw                # RFC 7946's winding
        assert shapely.geometry.shape(geometry).area == region.area_px == 30_000
        assert props["label"] == region.class_id and props["classification"] == {
            "name": region.class_name, "color": list(class_colour(region.class_index))}
        assert props["measurements"]["area mm2"] == pytest.approx(30_000 * 0.25 / 1e6)
        assert props["measurements"]["fields"] == 3 and 0 < props["measurements"]["mean probability"] < 1
    unknown = hand_made(["aa.b"], mpp=None)                          # no scale: no mm2, shares from pixels
    assert "area mm2" not in regions_geojson(unknown)["features"][0]["properties"]["measurements"]
    shares = composition(unknown)
    assert shares["alpha"] == {"area_mm2": None, "share": pytest.approx(2 / 3, abs=1e-4)}
    assert shares["scored_area_mm2"] is None and shares["tissue_area_mm2"] is None


def test_a_refused_slides_heatmap_shows_its_answered_fields_in_their_class_colours():
    result = hand_made(["rrrr", "abrr"])
    assert result.verdict.abstain_code == "fields_refused"          # 6 of 8 fields refused
    heatmap = render_heatmap(result)
    fields = result.fields
    for (x, y, w, h), top, reason in zip(fields.boxes, fields.top, fields.reasons, strict=True):
        colour = ABSTAIN_COLOUR if reason is not None else class_colour(int(top))   # on a white thumbnail:
        expected = np.round(255 * (1 - OPACITY) + np.asarray(colour) * OPACITY)
        np.testing.assert_allclose(heatmap[(y + h // 2) // DOWNSAMPLE, (x + w // 2) // DOWNSAMPLE], expected, atol=1)
    legend = heatmap[result.thumbnail.shape[0]:]
    for colour in (class_colour(0), class_colour(1), class_colour(2), ABSTAIN_COLOUR):   # a swatch each
        assert (legend == colour).all(axis=2).sum() > 20, colour


@pytest.fixture(scope="module")
def cmu(tmp_path_factory):
    """The CMU skin slide (CC0) scored with the tiny test model."""
    slide = require_dataset("wsi") / "CMU-1-Small-Region.svs"
    folder = tiny_slide_model_folder(tmp_path_factory.mktemp("tiny") / "hub_model", HUB_MODEL)
    return score_slide(slide, SlideModel.from_folder(folder))


def test_a_written_slide_has_regions_geojson_and_its_composition_in_summary(cmu, tmp_path):
    written = write_outputs(cmu, tmp_path, provenance={"model": {}, "code_version": "test", "packages": {}})
    assert written["outputs"] == list(SLIDE_FILES) and "regions.geojson" in written["outputs"]
    assert json.loads((tmp_path / SUMMARY).read_text()) == written and outputs_complete(tmp_path, cmu.path)
    features = json.loads((tmp_path / "regions.geojson").read_text())["features"]
    assert written["regions"] == {cid: sum(f["properties"]["label"] == cid for f in features) for cid in SPEC.class_ids}
    shares = written["composition"]
    assert sum(shares[key]["share"] for key in (*SPEC.class_ids, NOT_RECOGNISED)) == pytest.approx(1, abs=1e-3)
    assert shares["tissue_area_mm2"] == written["tissue"]["area_mm2"]
    # Every field is in a region or refused; the regions cover the fields' boxes to within the 1 px gaps.
    fields = cmu.fields
    assert sum(f["properties"]["measurements"]["fields"] for f in features) == fields.answered.sum()
    gaps = len(fields) * (fields.boxes[0, 2] + fields.boxes[0, 3] + 1)     # a 1 px strip per field edge at most
    raw = box_union(fields.boxes[fields.answered]).area
    covered = sum(shapely.geometry.shape(f["geometry"]).area for f in features)
    assert raw <= covered <= raw + gaps
    scored_px = shares["scored_area_mm2"] * 1e6 / cmu.scale.mpp ** 2
    assert box_union(fields.boxes).area - 10 <= scored_px <= box_union(fields.boxes).area + gaps
    heatmap = cv2.imread(str(tmp_path / "heatmap.png"))
    assert heatmap is not None and heatmap.shape[0] > cmu.thumbnail.shape[0]
    (tmp_path / "regions.geojson").unlink()
    assert not outputs_complete(tmp_path, cmu.path)
