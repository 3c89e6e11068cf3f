"""The slide viewer's registry and routes (``space/slide_views.py``, ``space/slide_viewer.py``,
``space/viewer_assets.py``): DeepZoom tiles only for slides this server scored, 404 for anything
else (also over real HTTP against a running Space), a bounded tile cache, files deleted at expiry."""
from __future__ import annotations

import http.client
import json
import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import slide_viewer
from slide_views import SlideViews, UnknownView
from tests.conftest import require_dataset
from viewer_assets import write_assets

CMU = "CMU-1-Small-Region.svs"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def results_folder(folder: Path, *, classes=("a", "b"), refused_verdict=True) -> None:
    """A scored slide's summary.json and fields.csv, as ``cohort.process`` writes them: two answered
    fields (one per class) and one refused, on a 2220 x 2967 slide."""
    rows = ["x,y,width,height,tissue,p_a,p_b,label,name,abstained,reason",
            "0,0,500,500,0.9,0.9,0.1,a,A,0,", "500,0,500,500,0.8,0.2,0.8,b,B,0,",
            "0,500,500,500,0.7,0.6,0.4,,,1,feature"]
    (folder / "fields.csv").write_text("\n".join(rows) + "\n")
    verdict = ({"abstained": True, "abstain_code": "fields_refused", "abstain_reason": "Most fields refused."}
               if refused_verdict else {"abstained": False, "name": "A", "confidence": 0.8})
    (folder / "summary.json").write_text(json.dumps({
        "slide": {"file": CMU}, "model": {"classes": list(classes), "names": ["A", "B"], "name": "m"},
        "verdict": verdict, "scale": {"um_per_px": 0.499, "source": "metadata"},
        "fields": {"answered": 2, "abstained": 1}}))


@pytest.fixture
def cmu() -> Path:
    return require_dataset("wsi") / CMU


@pytest.fixture
def views(tmp_path, cmu):
    clock = Clock()
    registry = SlideViews(tmp_path / "slide-views", keep_s=60, cache_bytes=200_000, clock=clock)
    view_id, folder = registry.new_folder()
    results_folder(folder / "results")
    view = registry.add(view_id, cmu)
    write_assets(view.results, dimensions=(2220, 2967))
    return registry, view, clock


def test_tiles_come_from_the_deepzoom_pyramid_and_the_cache_stays_bounded(views):
    registry, view, _ = views
    assert 'Width="2220" Height="2967"' in registry.dzi(view.id)
    top = 12                                                       # ceil(log2(2967)) = 12: full resolution
    pixels = cv2.imdecode(np.frombuffer(registry.tile(view.id, level=top, col=2, row=3), np.uint8), cv2.IMREAD_COLOR)
    assert pixels.shape == (256, 256, 3) and pixels.std() > 5      # real slide pixels, with their overlap
    for col in range(9):
        for row in range(6):
            registry.tile(view.id, level=top, col=col, row=row)
            assert registry.cached_bytes <= registry.cache_bytes
    with pytest.raises(UnknownView):
        registry.tile(view.id, level=top + 1, col=0, row=0)        # past the pyramid
    with pytest.raises(UnknownView):
        registry.tile(view.id, level=top, col=99, row=0)
    assert view.slide.is_file() and view.slide.parent == view.folder    # the slide is the view's own link/copy


def test_a_view_and_its_files_are_deleted_when_it_expires(views):
    registry, view, clock = views
    registry.tile(view.id, level=12, col=0, row=0)
    clock.now += 61
    with pytest.raises(UnknownView):
        registry.get(view.id)
    assert not view.folder.exists() and registry.cached_bytes == 0


def test_a_restarted_server_removes_the_folders_it_does_not_know(tmp_path, cmu):
    left = tmp_path / "slide-views" / ("ab" * 16)
    left.mkdir(parents=True)
    shutil.copy(cmu, left / "slide.svs")
    clock = Clock()
    os.utime(left, (clock.now - 3600, clock.now - 3600))
    SlideViews(tmp_path / "slide-views", clock=clock).expire()
    assert not left.exists()


def test_the_overlay_colours_answered_fields_even_when_the_slide_is_refused(views):
    _, view, _ = views
    overlay = cv2.imread(str(view.results / "overlay.png"), cv2.IMREAD_UNCHANGED)
    assert overlay.shape[:2] == (2967, 2220)
    a, b, refused, empty = overlay[250, 250], overlay[250, 750], overlay[750, 250], overlay[1500, 1500]
    assert a[3] == b[3] == refused[3] == 255 and empty[3] == 0
    assert len({tuple(a[:3]), tuple(b[:3]), tuple(refused[:3])}) == 3 and refused[0] == refused[1] == refused[2]
    fields = json.loads((view.results / "fields.json").read_text())["fields"]
    assert [f["class"] for f in fields] == [0, 1, -1] and fields[2]["reason"] == "feature"


BAD_PATHS = ["/slide/{id}/../../etc/passwd", "/slide/..%2F..%2Fetc%2Fpasswd", "/slide/%2Fetc%2Fpasswd",
             "/slide//etc/passwd", "/slide/{id}%2F..%2Fslide.svs", "/slide/{id}_files/12/0_0.jpeg/..",
             "/slide/{ID}.dzi", "/slide/" + "0" * 32 + ".dzi", "/slide/" + "0" * 32 + "_files/0/0_0.jpeg",
             "/slide/{id}.svs", "/slide/{id}/slide.svs", "/slide/{id}_files/12/-1_0.jpeg",
             "/slide-viewer/../slide_views.py", "/slide-viewer/..%2Fslide_views.py", "/slide-viewer/%2Fetc%2Fpasswd"]


def test_routes_answer_404_to_anything_but_a_registered_slide(views):
    registry, view, _ = views
    client = TestClient(FastAPI(routes=slide_viewer.routes(registry)))
    for path, kind in [(f"/slide/{view.id}.dzi", "application/xml"), (f"/slide/{view.id}_files/12/1_1.jpeg", "image/jpeg"),
                       (f"/slide/{view.id}.html", "text/html"), (f"/slide/{view.id}_overlay.png", "image/png"),
                       (f"/slide/{view.id}_fields.json", "application/json"),
                       ("/slide-viewer/openseadragon/openseadragon.min.js", "text/javascript")]:
        answer = client.get(path)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith(kind), path
    for path in BAD_PATHS:
        assert client.get(path.format(id=view.id, ID=view.id.upper())).status_code == 404, path


def test_the_viewer_page_states_the_verdict_apart_from_the_field_colours(views):
    registry, view, _ = views
    page = TestClient(FastAPI(routes=slide_viewer.routes(registry))).get(f"/slide/{view.id}.html").text
    assert "Slide verdict: <b>not recognised</b> (fields_refused)" in page and "the slide as a whole has no answer" in page
    assert 'id="overlay-toggle"' in page and 'id="overlay-opacity"' in page and "openseadragon.min.js" in page


def raw_get(url: str, path: str) -> int:
    """The status of GET ``path`` sent byte for byte (no client-side normalisation of ``..``)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.putrequest("GET", path, skip_accept_encoding=True)
        connection.endheaders()
        return connection.getresponse().status
    finally:
        connection.close()


def test_a_running_space_answers_404_to_traversal_and_unknown_ids_over_http(tiny_space):
    some_id = "ab" * 16                    # well formed, never registered
    for path in BAD_PATHS:
        assert raw_get(tiny_space, path.format(id=some_id, ID=some_id.upper())) == 404, path
    assert raw_get(tiny_space, "/slide-viewer/openseadragon/openseadragon.min.js") == 200
    assert raw_get(tiny_space, "/slide-viewer/openseadragon/LICENSE.txt") == 200
