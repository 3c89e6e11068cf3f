"""Stating a scale on ``/predict`` (a feature of the one scale parser): microns per pixel or a
magnification, for a model that declares its own microns per pixel in config.json; the decision and
the fields follow it, and an implausible or unusable value is refused at the edge with its sentence."""
from __future__ import annotations

import gradio as gr
import numpy as np
import pytest

from imageclf.model.predictor import Predictor
from tests.conftest import HUB_MODEL, require_dataset
from tests.support.tiny_model import imported_app, write_test_image, write_tiny_model_folder

MODEL_MPP = 0.5


@pytest.fixture(scope="module")
def physical_app(tmp_path_factory):
    """The app in-process (imported once for the module) on a tiny model that declares 0.5 um/px."""
    scale = {"field_of_view_px": None, "microns_per_pixel": MODEL_MPP, "microns_per_pixel_note": "test"}
    folder = write_tiny_model_folder(tmp_path_factory.mktemp("physical") / "model", config_extra={"scale": scale})
    with pytest.MonkeyPatch.context() as patch, imported_app(patch, folder) as app:
        yield app


@pytest.mark.parametrize("stated, relative", [("0.25", 2.0), ("0.25 um/px", 2.0), ("40x", 2.0), ("1.0", 0.5)])
def test_predict_follows_a_stated_scale(physical_app, tmp_path, stated, relative):
    image = write_test_image(tmp_path / "x.png", size=(300, 260), seed=3)     # height 300, width 260
    _, result = physical_app.SERVICE.predict({"path": str(image)}, stated)
    scale = result["scale"]
    assert scale["mode"] == "microns_per_pixel" and scale["relative_size"] == pytest.approx(relative)
    # The image is resampled by 1 / relative before it is cut (or, near the input's size, resized whole).
    fields = result["fields"]
    if fields["tiles_total"] > 1:
        assert fields["resampled_size"] == [round(260 / relative), round(300 / relative)]
    else:
        assert max(300, 260) / relative <= 2 * 64     # TILING_FACTOR inputs at most: one field


@pytest.mark.parametrize("stated, message", [("0.001", "plausible range"), ("fast", "not understood")])
def test_an_unusable_stated_scale_is_refused_at_the_edge(physical_app, tmp_path, stated, message):
    image = write_test_image(tmp_path / "x.png", size=(80, 80), seed=4)
    with pytest.raises(gr.Error, match=message):
        physical_app.SERVICE.predict({"path": str(image)}, stated)


@pytest.mark.slow
def test_the_lung_model_reads_a_tcga_tile_at_its_stated_40x():
    """MoNuSeg's TCGA tiles are 40x scans (about 0.25 um/px); the model reads at 0.368 um/px."""
    predictor = Predictor(HUB_MODEL)
    tile = sorted((require_dataset("external-he") / "lung-tcga" / "lung_aca").glob("*"))[0]
    stated = predictor.analyze(tile, scale="0.25").to_json()["scale"]
    assert stated["mode"] == "microns_per_pixel"
    assert stated["relative_size"] == pytest.approx(predictor.spec.scale.microns_per_pixel / 0.25, rel=1e-3)
    assert predictor.analyze(tile, scale="40x").to_json()["scale"] == stated
