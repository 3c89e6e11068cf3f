"""Benchmark the Space's slide viewer: first frame after scoring, and tile latency beside a static file.

Starts the Space (``space/app.py`` on ``--model``), scores each ``--slide`` through ``/predict_slide`` as
a script would, then:

1. **First frame**: Chromium (Playwright, Debian's ``/usr/bin/chromium``, launched before scoring) opens
   the viewer page the answer links to; the time from the answer arriving ("scored") to OpenSeadragon's
   first fully drawn view of the slide (``fully-loaded-change``), page, script, descriptor, tiles and
   overlay included.
2. **Tiles**: a zoom-and-pan sequence as a 1280 x 800 viewer asks for it: every tile in view at each
   DeepZoom level from the whole slide to full resolution, then four pans at full resolution; each tile
   request is followed by a request of a small static file of the same server (the viewer's own
   ``zoomin_rest.png``), so the floor is measured in the same run, interleaved. Reports p50/p95 of both
   and the ratio of the tile p95 to the static p95 (first visits: rendered by OpenSlide; then the same
   sequence again: from the tile cache).

Goals (issue 27, 2 cores): first frame <= 2 s; tile p95 <= 3x the static file's.

Example:
    .venv/bin/python -m scripts.perf.viewer_bench --slide ../shared/data/wsi/CMU-1-Small-Region.svs
"""
from __future__ import annotations

import argparse
import math
import re
import statistics
import sys
import time
from pathlib import Path

import httpx
from gradio_client import Client, handle_file

from scripts.perf.local_space import SpaceProcess
from scripts.perf.runtimes import cpu
from scripts.perf.traffic import percentile

ROOT = Path(__file__).resolve().parents[2]
VIEW = (1280, 800)                    # the viewer's size in screen pixels
STATIC = "/slide-viewer/openseadragon/images/zoomin_rest.png"
CHROMIUM = "/usr/bin/chromium"


def tile_sequence(width: int, height: int, tile: int) -> list[tuple[int, int, int]]:
    """(level, col, row) as a viewer of ``VIEW`` asks for them: each level in view around the centre, from
    the level where the slide fits to full resolution, then four pans of one view at full resolution."""
    top = math.ceil(math.log2(max(width, height)))
    fit = max(0, top - math.ceil(math.log2(max(width / VIEW[0], height / VIEW[1], 1))))
    seen, order = set(), []

    def view(level: int, cx: float, cy: float) -> None:
        scale = 2 ** (level - top)
        w, h = math.ceil(width * scale), math.ceil(height * scale)
        x0, y0 = max(0, int(cx * w - VIEW[0] / 2)), max(0, int(cy * h - VIEW[1] / 2))
        for row in range(y0 // tile, min(math.ceil(h / tile), (y0 + VIEW[1]) // tile + 1)):
            for col in range(x0 // tile, min(math.ceil(w / tile), (x0 + VIEW[0]) // tile + 1)):
                if (level, col, row) not in seen:
                    seen.add((level, col, row))
                    order.append((level, col, row))

    for level in range(fit, top + 1):
        view(level, 0.5, 0.5)
    step_x, step_y = VIEW[0] / width, VIEW[1] / height
    for dx, dy in ((1, 0), (1, 1), (0, 1), (-1, 1)):
        view(top, 0.5 + dx * step_x, 0.5 + dy * step_y)
    return order


def tile_latency(url: str, viewer: dict, passes: int = 2) -> list[dict]:
    """The zoom-and-pan sequence ``passes`` times, each tile request followed by one static-file request."""
    with httpx.Client(base_url=url, timeout=60) as http:
        dzi = http.get(viewer["dzi"]).text
        width, height = (int(v) for v in re.search(r'Width="(\d+)" Height="(\d+)"', dzi).groups())
        tile = int(re.search(r'TileSize="(\d+)"', dzi).group(1))
        order = tile_sequence(width, height, tile)
        rows = []
        for index in range(passes):
            tiles, static = [], []
            for level, col, row in order:
                start = time.perf_counter()
                answer = http.get(viewer["tiles"].format(level=level, col=col, row=row))
                tiles.append(time.perf_counter() - start)
                answer.raise_for_status()
                start = time.perf_counter()
                http.get(STATIC).raise_for_status()
                static.append(time.perf_counter() - start)
            rows.append({"pass": "first visit (rendered)" if index == 0 else "again (cached)", "tiles": len(tiles),
                         "tile_p50_ms": 1000 * statistics.median(tiles), "tile_p95_ms": 1000 * percentile(tiles, 95),
                         "static_p50_ms": 1000 * statistics.median(static),
                         "static_p95_ms": 1000 * percentile(static, 95),
                         "ratio_p95": percentile(tiles, 95) / percentile(static, 95)})
        return rows


def first_frame(browser, url: str, client: Client, slide: Path) -> tuple[dict, float, float]:
    """Score ``slide``; then the seconds from the answer to the viewer's first full frame (and scoring's)."""
    start = time.perf_counter()
    answer = client.predict(handle_file(str(slide)), "", api_name="/predict_slide")
    scored = time.perf_counter()
    summary = answer[2]
    page = browser.new_page(viewport={"width": VIEW[0], "height": VIEW[1] + 150})
    page.goto(url + summary["viewer"]["page"])
    page.wait_for_function("window.viewerTimes && window.viewerTimes.firstFrame !== null", timeout=60_000)
    frame_s = time.perf_counter() - scored
    times = page.evaluate("window.viewerTimes")
    print(f"  in the page (ms from navigation start): script ran {times['start']:.0f}, slide opened {times['open']:.0f}, "
          f"first full frame {times['firstFrame']:.0f} ({times['tiles']} tiles loaded)")
    page.close()
    return summary, scored - start, frame_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "hub_model")
    parser.add_argument("--slide", type=Path, action="append",
                        help="a slide to score and view (repeatable; default: the CC0 CMU slide in ../shared)")
    args = parser.parse_args(argv)
    slides = args.slide or [ROOT.parent / "shared" / "data" / "wsi" / "CMU-1-Small-Region.svs"]
    from playwright.sync_api import sync_playwright   # deferred: only this benchmark needs a browser

    print(f"CPU: {cpu()}")
    with SpaceProcess(model_dir=args.model) as space, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        client = Client(space.url, verbose=False)
        for slide in slides:
            summary, score_s, frame_s = first_frame(browser, space.url, client, slide)
            print(f"\n{slide.name}: {summary['slide']['dimensions'][0]} x {summary['slide']['dimensions'][1]} px, "
                  f"{summary['fields']['classified']} fields, scored in {score_s:.1f} s")
            print(f"  scored -> first viewer frame: {frame_s:.2f} s (goal <= 2 s: {'met' if frame_s <= 2 else 'MISSED'})")
            print("  | pass | tiles | tile p50 ms | tile p95 ms | static p50 ms | static p95 ms | tile p95 / static p95 |")
            print("  |---|---:|---:|---:|---:|---:|---:|")
            for row in tile_latency(space.url, summary["viewer"]):
                print(f"  | {row['pass']} | {row['tiles']} | {row['tile_p50_ms']:.1f} | {row['tile_p95_ms']:.1f} | "
                      f"{row['static_p50_ms']:.1f} | {row['static_p95_ms']:.1f} | {row['ratio_p95']:.2f}x "
                      f"({'met' if row['ratio_p95'] <= 3 else 'MISSED'} <= 3x) |")
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
