"""The Space's ``/predict_slide`` endpoint (and MCP tool), called through ``gradio_client`` as a script would."""
from __future__ import annotations

import json

import httpx
import pytest
from gradio_client import Client, handle_file

from scripts.perf.synthetic_slides import lung_mosaic, lung_tiles, write_slide
from tests.conftest import HUB_MODEL, require_dataset
from tests.support.slides import tiny_slide_model_folder
from tests.support.tiny_model import run_space


@pytest.fixture(scope="module")
def lung_slide(tmp_path_factory):
    tiles = lung_tiles(require_dataset("external-he") / "lung-tcga")
    return write_slide(tmp_path_factory.mktemp("slide") / "lung.svs", lung_mosaic(tiles, ["LL", "L."]), mpp=0.25)


def test_a_model_without_a_physical_scale_still_serves_and_says_why_slides_are_refused(tiny_space, lung_slide):
    client = Client(tiny_space, verbose=False)
    assert "/predict_slide" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    with pytest.raises(Exception, match="cannot score whole-slide images: .*declares no microns per pixel"):
        client.predict(handle_file(str(lung_slide)), "", api_name="/predict_slide")


@pytest.mark.slow
def test_predict_slide_answers_with_heatmap_summary_downloads_and_a_viewer(lung_slide, tmp_path):
    folder = tiny_slide_model_folder(tmp_path / "hub_model", HUB_MODEL)
    uploads = tmp_path / "gradio"
    with run_space(folder, env={"GRADIO_TEMP_DIR": str(uploads)}) as url:
        heatmap, panel, summary, csv_path, geojson_path, regions_path, frame = Client(url, verbose=False).predict(
            handle_file(str(lung_slide)), "", api_name="/predict_slide")
        # The upload janitor deleted the slide once scored: Gradio's own upload path, as it recorded it; the
        # viewer keeps its own link in its view folder until the view expires.
        kept = sorted(uploads.rglob("*.svs"))
        assert kept == [uploads / "slide-views" / summary["viewer"]["id"] / "slide.svs"], kept
        for link in ("page", "dzi", "overlay", "fields"):
            assert httpx.get(url + summary["viewer"][link]).status_code == 200, link
        tile = httpx.get(url + summary["viewer"]["tiles"].format(level=0, col=0, row=0))
        assert tile.status_code == 200 and tile.headers["content-type"] == "image/jpeg"
    with open(regions_path) as handle:
        assert json.load(handle)["type"] == "FeatureCollection"
    assert "Slide verdict" in panel and "slide/" in frame
    assert summary["model"]["sha256"] and summary["code_version"] and "folder" not in summary["model"]
    assert summary["scale"]["source"] == "metadata" and summary["fields"]["classified"] > 0
    assert summary["verdict"]["abstained"] is (summary["verdict"]["abstain_code"] is not None)
    with open(geojson_path) as handle:
        assert len(json.load(handle)["features"]) == summary["fields"]["classified"]
    with open(csv_path) as handle:
        assert handle.readline().startswith("x,y,width,height")
    assert heatmap
