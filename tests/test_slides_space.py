"""The Space's slide tab (``space/slide_tab.py``) on the tiny test model: heatmap, summary panel, summary,
downloads and viewer for an uploaded slide, scored by the command line's ``cohort.process``, the upload
deleted afterwards by the Space's upload janitor (the viewer keeps its own link until it expires), and a
``gr.Error`` sentence for bad input."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import gradio as gr
import pytest

import slide_tab
from imageclf.hashing import file_sha256
from imageclf.model.predictor import Predictor
from imageclf.slides.cohort import RunOptions, SlideJob, process
from imageclf.settings import Settings
from slide_views import SlideViews
from scripts.perf.synthetic_slides import lung_mosaic, lung_tiles, write_slide
from tests.conftest import HUB_MODEL, require_dataset
from tests.support.slides import tiny_slide_model_folder
from uploads import UploadJanitor


class Recorder:
    """Stands in for ``gr.Progress``: remembers every (fraction, text)."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, str | None]] = []

    def __call__(self, fraction: float, desc: str | None = None) -> None:
        self.calls.append((fraction, desc))


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return tiny_slide_model_folder(tmp_path_factory.mktemp("tiny") / "hub_model", HUB_MODEL)


@pytest.fixture(scope="module")
def bound_model(tiny_folder):
    return slide_tab.use_model(Predictor(tiny_folder))


@pytest.fixture
def uploads(tmp_path, monkeypatch):
    """The upload folder, with the Space's one janitor (``service.UPLOADS``) watching it."""
    monkeypatch.setattr(slide_tab, "SETTINGS", Settings(upload_dir=tmp_path / "gradio"))
    monkeypatch.setattr(slide_tab, "UPLOADS", UploadJanitor(tmp_path / "gradio", folder_grace_s=0))
    monkeypatch.setattr(slide_tab, "VIEWS", SlideViews(tmp_path / "gradio" / "slide-views", keep_s=60))
    return tmp_path / "gradio"


def upload_slide(uploads, name="lung.svs"):
    tiles = lung_tiles(require_dataset("external-he") / "lung-tcga")
    upload = uploads / "0123abcd" / name
    upload.parent.mkdir(parents=True)
    return write_slide(upload, lung_mosaic(tiles, ["LL.", ".LL"]), mpp=0.25)


def test_an_uploaded_slide_gets_its_heatmap_summary_and_downloads(bound_model, tiny_folder, uploads):
    upload = upload_slide(uploads)
    progress = Recorder()
    heatmap, panel, summary, csv_path, geojson_path, regions_path, frame = slide_tab.predict_slide(
        str(upload), "", progress)
    assert heatmap.ndim == 3 and heatmap.shape[2] == 3 and heatmap.shape[1] <= 2048
    assert summary["kind"] == "slide" and summary["scale"]["source"] == "metadata"
    assert summary["model"]["name"] == bound_model.name and summary["fields"]["classified"] > 0
    assert summary["model"]["sha256"] == file_sha256(tiny_folder / "model.keras")     # the run metadata
    assert summary["model"]["revision"] == bound_model.revision and summary["code_version"]
    assert "path" not in summary["slide"] and "folder" not in summary["model"]      # no server paths
    with open(csv_path, newline="") as handle:
        assert len(list(csv.DictReader(handle))) == summary["fields"]["classified"]
    assert json.loads(open(geojson_path).read())["type"] == "FeatureCollection"
    written = cv2.cvtColor(cv2.imread(str(Path(csv_path).parent / "heatmap.png")), cv2.COLOR_BGR2RGB)
    assert (written == heatmap).all()                           # drawn once: the one shown is the one written
    assert progress.calls[-1][0] == 1.0 and "tissue fields" in progress.calls[-1][1]
    assert not upload.exists()                                   # the upload does not outlive its request
    view = slide_tab.VIEWS.get(summary["viewer"]["id"])         # the viewer's own link to it does, until expiry
    assert view.slide.is_file() and Path(csv_path).parent == view.results
    assert f'src="slide/{view.id}.html"' in frame and summary["viewer"]["dzi"] == f"/slide/{view.id}.dzi"
    assert (view.results / "overlay.png").is_file() and (view.results / "fields.json").is_file()
    regions = json.loads(Path(regions_path).read_text())
    assert regions["type"] == "FeatureCollection" and all(
        f["properties"]["objectType"] == "annotation" for f in regions["features"])
    assert panel.startswith("### Slide verdict:") and "**Tissue:**" in panel and "**Scale:** 0.250 µm/px" in panel
    on_disk = json.loads((Path(csv_path).parent / "summary.json").read_text())
    assert {k: v for k, v in on_disk.items() if k not in ("slide", "model")} == {
        k: v for k, v in summary.items() if k not in ("slide", "model", "viewer")}


def test_an_upload_that_cannot_be_scored_is_deleted_and_leaves_no_results(bound_model, uploads):
    upload = uploads / "4567cdef" / "notes.svs"
    upload.parent.mkdir(parents=True)
    upload.write_bytes(b"II*\x00" + bytes(64))
    with pytest.raises(gr.Error, match="OpenSlide cannot read") as caught:
        slide_tab.predict_slide(str(upload), "", Recorder())
    assert "\n" not in caught.value.message and not upload.exists()
    assert not list(slide_tab.VIEWS.root.iterdir())             # no folder holding only error.json


def test_an_upload_is_deleted_even_when_the_scale_is_refused(bound_model, uploads):
    upload = upload_slide(uploads)
    with pytest.raises(gr.Error, match="outside the plausible range"):
        slide_tab.predict_slide(str(upload), "1000", Recorder())
    assert not upload.exists()


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


def test_the_space_writes_the_same_regions_as_the_command_line(bound_model, tiny_folder, uploads, tmp_path):
    """The Slide tab and the command line's per-slide function (``cohort.process``, which the serial and
    Dask runs call) give byte-identical regions.geojson and the same composition for the same slide."""
    upload = upload_slide(uploads)
    cli = process(SlideJob(write_slide(tmp_path / "same.svs", lung_mosaic(
        lung_tiles(require_dataset("external-he") / "lung-tcga"), ["LL.", ".LL"]), mpp=0.25), tmp_path / "cli"),
        bound_model, RunOptions(model_folder=tiny_folder))
    *_, summary, _, _, regions_path, _ = slide_tab.predict_slide(str(upload), "", Recorder())
    assert Path(regions_path).read_bytes() == (tmp_path / "cli" / "regions.geojson").read_bytes()
    assert summary["composition"] == cli.summary["composition"] and summary["regions"] == cli.summary["regions"]
