"""The Space in a real browser: Chromium (Debian's ``/usr/bin/chromium``) driven by Playwright.

A person's three paths through the page on the bundled ``hub_model/``: a real tile (verdict,
top three classes, Grad-CAM), a large mosaic of real tiles (tile map) and a non-tissue image
(not recognised). Screenshots go to ``test-artifacts/`` (gitignored). Without Chromium the
tests are skipped locally and fail under ``CI=true`` (``.ci/run`` installs it).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from playwright.sync_api import sync_playwright

from imageclf.core.imaging import decode_image
from imageclf.model.predictor import Predictor
from tests.conftest import HUB_MODEL, ROOT, missing, require_dataset


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = ROOT / "test-artifacts"
VIEWPORT = {"width": 1280, "height": 900}
ANSWER_TIMEOUT_MS = 120_000  # the machine is shared; a first answer under load can take a while
UPLOAD = "#input-image input[type=file]"


def require_chromium() -> Path:
    """Chromium's path; skip when it is missing, but fail under CI=true where it must exist."""
    if not os.access(CHROMIUM, os.X_OK):
        missing(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium); "
                "Playwright's own browser downloads are not used", ci_hint="CI must have it (.ci/run installs it)")
    return CHROMIUM


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    if not (HUB_MODEL / "model.keras").is_file():
        pytest.skip("hub_model/model.keras not present")
    return Predictor(HUB_MODEL)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    executable = require_chromium()

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def space_url(predictor, browser, hub_space) -> str:
    return hub_space  # the session's Space on the bundled model (tests/conftest.py)


@pytest.fixture
def page(browser, space_url):
    """A fresh page on the Space, loaded and ready for an upload; browser errors are collected."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda err: page.errors.append(str(err)))
    page.goto(space_url)
    page.wait_for_selector(UPLOAD, state="attached", timeout=60_000)
    yield page
    context.close()


def _upload_and_wait(page, path: Path, text: str) -> str:
    """Upload like a person (the upload event classifies), wait for ``text`` in the verdict."""
    page.set_input_files(UPLOAD, str(path))
    page.wait_for_function("text => (document.querySelector('#verdict')?.innerText || '').includes(text)",
                           arg=text, timeout=ANSWER_TIMEOUT_MS)
    # The event is over when no output shows a pending status (Gradio fades pending outputs).
    page.wait_for_function("!document.querySelector('.pending, [data-testid=status-tracker]:not(.hide)')",
                           timeout=ANSWER_TIMEOUT_MS)
    return page.inner_text("#verdict")


def _image_rendered(page, elem_id: str) -> None:
    """The output image's <img> is visible and decoded (naturalWidth > 0)."""
    img = page.locator(f"#{elem_id} img").first
    img.wait_for(state="visible", timeout=30_000)
    page.wait_for_function("el => el.complete && el.naturalWidth > 0", arg=img.element_handle(),
                           timeout=30_000)
    assert img.evaluate("el => el.naturalWidth") > 0


def _screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path))
    return path


def _write_png(path: Path, rgb: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def test_real_tile_verdict_top_classes_and_grad_cam(page, predictor, lung_tile):
    answer = predictor.analyze(lung_tile)
    assert not answer.abstained, "the reference tile should be answered"
    expected = {"name": answer.name}
    verdict = _upload_and_wait(page, lung_tile, expected["name"])
    assert verdict.startswith(expected["name"]) and "calibrated" in verdict
    others = [name for name in predictor.names if name != expected["name"]]
    assert not any(verdict.startswith(name) for name in others)

    # Top classes: exactly three rows, the first the predicted class.
    rows = page.locator("#top-classes .confidence-set")
    assert rows.count() == 3
    assert sorted(rows.locator("dt").all_inner_texts()) == sorted(predictor.names)
    assert page.inner_text("#top-classes [data-testid=label-output-value]") == expected["name"]

    _image_rendered(page, "gradcam")
    legend = page.inner_text("#gradcam-legend")   # colour bar plus what Grad-CAM does and does not show
    assert "low" in legend and "high" in legend and "not whether the answer is right" in legend
    assert not page.locator("#tile-map").is_visible()
    assert page.errors == []
    _screenshot(page, "space.png")

    # Phone width: nothing wider than the screen, the Grad-CAM title clear of its icons.
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(300)
    assert page.evaluate("document.documentElement.scrollWidth") <= 391
    title = page.locator("#gradcam [data-testid=block-label]").bounding_box()
    icons = [page.locator("#gradcam button").nth(i).bounding_box()
             for i in range(page.locator("#gradcam button").count())]
    for box in (b for b in icons if b and b["height"] < 60):   # icon buttons, not the image itself
        overlaps = not (title["x"] + title["width"] <= box["x"] or box["x"] + box["width"] <= title["x"] or
                        title["y"] + title["height"] <= box["y"] or box["y"] + box["height"] <= title["y"])
        assert not overlaps, (title, box)
    page.locator("#gradcam").scroll_into_view_if_needed()
    _screenshot(page, "space-390px.png")


def test_large_image_gets_a_field_map(page, predictor, lung_data, tmp_path):
    # 1500 x 1500 px of real tiles of one class: 7 x 7 tiles of 224 px, cropped.
    size = predictor.input_size[0]
    picks = sorted((lung_data / "lung_n").glob("*.jpeg"))[:49]
    grid = 7
    mosaic = np.zeros((grid * size, grid * size, 3), np.uint8)
    for index in range(grid * grid):
        row, col = divmod(index, grid)
        mosaic[row * size:(row + 1) * size, col * size:(col + 1) * size] = decode_image(picks[index])
    path = _write_png(tmp_path / "mosaic.png", mosaic[:1500, :1500])

    verdict = _upload_and_wait(page, path, "tissue fields classified")
    answer = predictor.analyze(path)
    assert verdict.startswith(answer.name if not answer.abstained else "Not recognised")
    _image_rendered(page, "tile-map")
    summary = page.inner_text("#tile-summary")
    assert "background fields skipped" in summary
    assert not page.locator("#gradcam").is_visible()
    assert page.errors == []
    _screenshot(page, "space-tiles.png")


@pytest.mark.parametrize("kind", ["white", "noise"])
def test_non_tissue_image_is_not_recognised(page, predictor, kind, tmp_path):
    rgb = (np.full((224, 224, 3), 255, np.uint8) if kind == "white"
           else np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8))
    path = _write_png(tmp_path / f"{kind}.png", rgb)
    assert predictor.analyze(path).abstained

    verdict = _upload_and_wait(page, path, "Not recognised")
    assert "Treat this as no answer" in verdict
    # No class is named anywhere on the page: no top-class rows, no class-labelled Grad-CAM.
    assert page.locator("#top-classes .confidence-set").count() == 0
    assert not page.locator("#gradcam").is_visible()
    visible = page.inner_text("body")
    assert not any(name in visible for name in predictor.names), visible
    assert page.errors == []
    _screenshot(page, f"space-not-recognised-{kind}.png")


def test_the_example_slide_opens_in_the_zoomable_viewer(page, space_url):
    """The Slide tab's example (the CC0 CMU slide, skin: refused as a whole, honestly): the viewer shows it,
    zooming in fetches deeper tiles that all succeed, the field map toggles, a field reads out its answer."""
    require_dataset("wsi")
    tiles: list[tuple[int, str]] = []
    page.on("response", lambda r: tiles.append((r.status, r.url)) if "_files/" in r.url else None)
    page.get_by_text("Slide: a whole-slide image").click()
    page.click("#slide-example-button")
    frame_element = page.wait_for_selector("#slide-viewer-frame", timeout=ANSWER_TIMEOUT_MS)
    frame = frame_element.content_frame()
    frame.wait_for_function("window.viewerTimes && window.viewerTimes.firstFrame !== null", timeout=60_000)
    assert "Slide verdict: not recognised" in frame.inner_text("#verdict")
    assert page.inner_text("#slide-summary-panel").startswith("Slide verdict: not recognised")
    levels_before = {int(url.split("_files/")[1].split("/")[0]) for _, url in tiles}

    frame.evaluate("window.slideViewer.viewport.zoomBy(6)")                   # zoom in, then pan
    frame.evaluate("window.slideViewer.viewport.panBy(new OpenSeadragon.Point(0.1, 0.1))")
    frame.wait_for_function("window.slideViewer.world.getItemAt(0).getFullyLoaded()", timeout=30_000)
    levels_after = {int(url.split("_files/")[1].split("/")[0]) for _, url in tiles}
    assert max(levels_after) > max(levels_before), (levels_before, levels_after)
    assert tiles and all(status == 200 for status, _ in tiles), [t for t in tiles if t[0] != 200]

    overlay = "window.slideViewer.world.getItemAt(1).getOpacity()"
    assert frame.evaluate(overlay) > 0
    frame.click("#overlay-toggle")
    assert frame.evaluate(overlay) == 0 and frame.evaluate("document.body.dataset.overlay") == "off"
    frame.click("#overlay-toggle")
    assert frame.evaluate(overlay) > 0

    box = frame.locator("#osd").bounding_box()
    frame.locator("#osd").click(position={"x": box["width"] / 2, "y": box["height"] / 2})
    assert "Not recognised (" in frame.inner_text("#field-info")     # every field of this skin slide is refused
    assert page.errors == []
    ARTIFACTS.mkdir(exist_ok=True)
    frame_element.screenshot(path=str(ARTIFACTS / "slide-viewer.png"))
