"""Whole-slide reading without a model: microns per pixel (metadata, --mpp, limits), level choice, the
tissue mask, the model's physical scale, and a clear sentence for every file that is not a usable slide."""
from __future__ import annotations

import dataclasses

import json

import numpy as np
import pytest

from imageclf.model.config import read_config
from imageclf.core.request import MPP_RANGE, ScaleError, parse_scale
from imageclf.slides.physical import choose_level
from imageclf.slides.slide_model import model_mpp
from imageclf.slides.reader import CHUNK_SIDE, SlideError, SlideReader, input_kind
from imageclf.slides.tissue import find_tissue
from scripts.perf.synthetic_slides import lung_mosaic, lung_tiles, write_slide
from tests.conftest import HUB_MODEL, require_dataset
from tests.support.slides import flat_mosaic, pen_stroke, write_huge_slide


@pytest.fixture(scope="module")
def tiles():
    return lung_tiles(require_dataset("external-he") / "lung-tcga")


@pytest.fixture(scope="module")
def lung_svs(tiles, tmp_path_factory):
    return write_slide(tmp_path_factory.mktemp("slides") / "lung.svs", lung_mosaic(tiles, ["LL.", ".LL"]), mpp=0.25)


def test_metadata_mpp_of_generated_and_real_slides(lung_svs, tiles, tmp_path):
    with SlideReader(lung_svs) as slide:
        assert slide.vendor == "aperio" and slide.metadata_mpp[0] == pytest.approx(0.25)
        assert slide.dimensions == (3000, 2000) and slide.level_downsamples == (1.0, 4.0)
    generic = write_slide(tmp_path / "lung.tif", lung_mosaic(tiles, ["L"]), mpp=0.5, vendor="generic",
                          downsamples=(1, 2))
    with SlideReader(generic) as slide:
        assert slide.vendor == "generic-tiff" and slide.metadata_mpp[0] == pytest.approx(0.5, rel=1e-3)
    wsi = require_dataset("wsi")
    with SlideReader(wsi / "CMU-1-Small-Region.svs") as slide:
        assert slide.metadata_mpp[0] == pytest.approx(0.499)
    with SlideReader(wsi / "TCGA-CR-7395-01A-01-TS1.svs") as slide:
        assert slide.metadata_mpp is None and len(slide.level_downsamples) == 2


def test_regions_are_the_source_pixels_and_the_thumbnail_is_bounded(lung_svs, tiles):
    mosaic = lung_mosaic(tiles, ["LL.", ".LL"])
    with SlideReader(lung_svs) as slide:
        assert np.array_equal(slide.read(900, 100, 0, 300, 300), mosaic.region(900, 100, 300, 300))
        outside = slide.read(2900, 1900, 0, 200, 200)            # past the edge: white glass, not black
        assert outside[150:, 150:].min() == 255
        thumb = slide.thumbnail(10.0)
        assert thumb.shape == (200, 300, 3)
        assert slide.best_level(10.0) == 1 and slide.best_level(3.9) == 0
        with pytest.raises(ValueError):
            slide.read(0, 0, 0, 2 * CHUNK_SIDE + 1, 10)           # one bounded region at a time


@pytest.mark.parametrize("text, expected", [("0.25", 0.25), ("0.5 um/px", 0.5), (".25", 0.25), ("2.5e-1", 0.25),
                                            ("40x", 0.25), ("0.5 mpp", 0.5)])
def test_the_one_scale_parser_reads_the_mpp_option(text, expected):
    config = read_config(HUB_MODEL)
    parsed = parse_scale(text, config.scale, what="--mpp")
    assert parsed.mode == "microns_per_pixel" and parsed.microns_per_pixel == pytest.approx(expected)
    assert parse_scale(None).mode == parse_scale("").mode == "auto"


@pytest.mark.parametrize("text", ["0", "-1", "500", "0.001", "fast", "nan"])
def test_absurd_mpp_option_is_refused_with_its_range(text):
    with pytest.raises(ScaleError) as caught:
        parse_scale(text, read_config(HUB_MODEL).scale, what="--mpp")
    message = str(caught.value)
    assert "--mpp" in message and (f"{MPP_RANGE[0]:g}-{MPP_RANGE[1]:g}" in message or "not understood" in message
                                   or "positive" in message)
    assert "\n" not in message


def test_level_nearest_above_the_model_scale():
    assert choose_level((1.0, 4.0, 16.0), slide_mpp=0.25, model_mpp=0.368) == 0       # 1.0 um/px is too coarse
    assert choose_level((1.0, 2.0, 8.0), slide_mpp=0.125, model_mpp=0.368) == 1       # 0.25 <= 0.368 < 1.0
    assert choose_level((1.0, 4.0), slide_mpp=0.1, model_mpp=0.4) == 1                # exactly the model's scale
    assert choose_level((1.0, 2.0), slide_mpp=0.8, model_mpp=0.368) == 0              # even level 0 is coarser


def test_the_model_scale_is_in_its_own_config():
    config = read_config(HUB_MODEL)
    value = model_mpp(config.scale, config.model_name)
    assert 0.2 < value < 0.6 and value == config.scale.microns_per_pixel
    assert "IQR" in config.scale.microns_per_pixel_note and "MoNuSeg" in config.scale.microns_per_pixel_note
    with pytest.raises(SlideError, match="declares no microns per pixel"):
        model_mpp(dataclasses.replace(config.scale, microns_per_pixel=None), "another-model")


def test_tissue_mask_leaves_out_glass_and_pen_and_measures_area(tiles):
    mosaic = pen_stroke(lung_mosaic(tiles, ["LL.", ".LL"]))
    thumb = mosaic.region(0, 0, 375, 250, 8)
    tissue = find_tissue(thumb, downsample=8.0, mpp=0.25)
    assert tissue.area_mm2 == pytest.approx(4 * 0.25 ** 2, rel=0.15)    # four 1000 px tiles at 0.25 um/px
    pen, left, lower_right = tissue.shares(np.array([2000, 0, 2000]), np.array([0, 0, 1000]), 1000, 1000)
    assert tissue.pen_pixels > 0 and pen < 0.01   # the marker line is not tissue
    assert left > 0.8 and lower_right > 0.8
    blank = find_tissue(flat_mosaic((242, 241, 239)).region(0, 0, 375, 250, 8), downsample=8.0, mpp=0.25)
    assert not blank.mask.any() and blank.area_mm2 == 0.0


def test_every_unusable_file_gets_one_sentence(lung_svs, tmp_path):
    text = tmp_path / "notes.svs"
    text.write_text("not a slide\n")
    truncated = tmp_path / "truncated.svs"
    truncated.write_bytes(lung_svs.read_bytes()[:4000])
    huge = write_huge_slide(tmp_path / "huge.svs", 300_000, 300_000)
    messages = {}
    for path in (text, truncated, huge, tmp_path / "missing.svs"):
        with pytest.raises(SlideError) as caught:
            SlideReader(path).close()
        messages[path.name] = str(caught.value)
    assert "not a whole-slide image" in messages["notes.svs"]
    assert "damaged" in messages["truncated.svs"] or "cannot read" in messages["truncated.svs"]
    assert "300,000 x 300,000" in messages["huge.svs"] and "broken" in messages["huge.svs"]
    assert "not found" in messages["missing.svs"]
    assert all("\n" not in m and m.endswith(".") for m in messages.values())


def test_corrupt_tile_data_is_a_sentence_at_read_time(lung_svs, tmp_path):
    data = bytearray(lung_svs.read_bytes())
    middle = len(data) // 3
    data[middle:middle + 200_000] = bytes(200_000)          # zeroed tiles: their zlib streams are broken
    corrupt = tmp_path / "corrupt.svs"
    corrupt.write_bytes(bytes(data))
    with SlideReader(corrupt) as slide, pytest.raises(SlideError, match="damaged"):
        for y in range(0, 2000, 500):
            for x in range(0, 3000, 500):
                slide.read(x, y, 0, 500, 500)


def test_plain_images_and_single_level_tiffs_take_the_image_path(tiles, tmp_path):
    small = write_slide(tmp_path / "plain.tif", lung_mosaic(tiles, ["L"]), mpp=0.25, vendor="generic",
                        downsamples=(1,))
    png = tmp_path / "tile.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n")
    assert input_kind(small, max_image_pixels=64_000_000) == "image"
    assert input_kind(small, max_image_pixels=100) == "slide"            # too big to decode whole: read lazily
    assert input_kind(png, max_image_pixels=64_000_000) == "image"
    assert input_kind(tmp_path / "x.svs", max_image_pixels=64_000_000) == "slide"


@pytest.mark.parametrize("unit, resolution, expected", [("centimeter", 40_000.0, 0.25), ("inch", 50_800.0, 0.5)])
def test_mpp_falls_back_to_the_tiff_resolution_tags(unit, resolution, expected):
    """A file whose OpenSlide properties carry no ``openslide.mpp-x/y`` (a vendor OpenSlide does not map
    them for) still has a physical scale when its TIFF resolution tags state one."""
    reader = SlideReader.__new__(SlideReader)     # only the properties matter here
    reader._slide = type("Props", (), {"properties": {"tiff.XResolution": str(resolution),
                                                      "tiff.YResolution": str(resolution),
                                                      "tiff.ResolutionUnit": unit}})()
    value, source = reader.metadata_mpp
    assert value == pytest.approx(expected) and source == "TIFF resolution tags"
    reader._slide.properties["tiff.ResolutionUnit"] = "none"   # no physical unit: no scale
    assert reader.metadata_mpp is None
