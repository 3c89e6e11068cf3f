"""The Space's slide tab (``space/slide_tab.py``) on the tiny test model: heatmap, summary and downloads
for an uploaded slide, the upload deleted afterwards, and a ``gr.Error`` sentence for bad input."""
from __future__ import annotations

import csv
import json

import gradio as gr
import pytest

import slide_tab
from imageclf.model.predictor import Predictor
from imageclf.settings import Settings
from tests.conftest import HUB_MODEL, require_dataset
from tests.support.slides import lung_mosaic, lung_tiles, tiny_slide_model_folder, write_slide


class Recorder:
    """Stands in for ``gr.Progress``: remembers every (fraction, text)."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, str | None]] = []

    def __call__(self, fraction: float, desc: str | None = None) -> None:
        self.calls.append((fraction, desc))


@pytest.fixture(scope="module")
def bound_model(tmp_path_factory):
    folder = tiny_slide_model_folder(tmp_path_factory.mktemp("tiny") / "hub_model", HUB_MODEL)
    return slide_tab.use_model(Predictor(folder))


@pytest.fixture
def uploads(tmp_path, monkeypatch):
    monkeypatch.setattr(slide_tab, "SETTINGS", Settings(upload_dir=tmp_path / "gradio"))
    return tmp_path / "gradio"


def test_an_uploaded_slide_gets_its_heatmap_summary_and_downloads(bound_model, uploads):
    tiles = lung_tiles(require_dataset("external-he") / "lung-tcga")
    upload = uploads / "0123abcd" / "lung.svs"
    upload.parent.mkdir(parents=True)
    write_slide(upload, lung_mosaic(tiles, ["LL.", ".LL"]), mpp=0.25)
    progress = Recorder()
    heatmap, summary, csv_path, geojson_path = slide_tab.predict_slide(str(upload), "", progress)
    assert heatmap.ndim == 3 and heatmap.shape[2] == 3 and heatmap.shape[1] <= 2048
    assert summary["kind"] == "slide" and summary["scale"]["source"] == "metadata"
    assert summary["model"]["name"] == bound_model.name and summary["fields"]["classified"] > 0
    with open(csv_path, newline="") as handle:
        assert len(list(csv.DictReader(handle))) == summary["fields"]["classified"]
    assert json.loads(open(geojson_path).read())["type"] == "FeatureCollection"
    assert progress.calls[-1][0] == 1.0 and "tissue fields" in progress.calls[-1][1]
    assert not upload.exists()                                   # the slide does not outlive its request


@pytest.mark.parametrize("mpp, content, words", [
    ("1000", None, "outside the plausible range"),
    ("", b"not a slide", "not a whole-slide image"),
])
def test_bad_input_is_one_sentence(bound_model, uploads, tmp_path, mpp, content, words):
    path = tmp_path / "upload.svs"
    path.write_bytes(content or b"II*\x00")
    with pytest.raises(gr.Error) as caught:
        slide_tab.predict_slide(str(path), mpp, Recorder())
    assert words in caught.value.message and "\n" not in caught.value.message


def test_a_plain_image_is_sent_to_the_image_tab(bound_model, uploads, tmp_path):
    png = tmp_path / "tile.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(gr.Error, match="ordinary image"):
        slide_tab.predict_slide(str(png), None, Recorder())
