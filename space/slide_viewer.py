"""The slide viewer's HTTP routes: OpenSeadragon's DeepZoom URLs for slides this server scored.

Every URL names a slide by the opaque id :class:`slide_views.SlideViews` gave it when it was scored:

    GET /slide/<id>.html                             the viewer page (the Slide tab shows it in a frame)
    GET /slide/<id>.dzi                              DeepZoom descriptor (XML)
    GET /slide/<id>_files/<level>/<col>_<row>.jpeg   one 256 px tile (OpenSeadragon's own convention)
    GET /slide/<id>_overlay.png                      the field map over the whole slide (RGBA)
    GET /slide/<id>_fields.json                      every field's box, class, probabilities, reason
    GET /slide-viewer/<file>                         the vendored OpenSeadragon and the viewer script

A request is matched against one pattern of these shapes, and an id must be 32 hex digits that this
process registered and has not expired: anything else (``..``, absolute paths, encoded slashes,
unknown or expired ids, tiles outside the pyramid) is 404, and no request path is ever joined to a
folder. Tiles render on worker threads (at most ``RENDER_THREADS`` at once), off the event loop.

Example (in app.py):
    >>> demo.launch(app_kwargs={"routes": slide_viewer.routes()})
    >>> httpx.get(f"{url}/slide/{view_id}_files/12/3_4.jpeg").headers["content-type"]
    'image/jpeg'
"""
from __future__ import annotations

import functools
import html
import json
import re
from pathlib import Path

import anyio
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.routing import APIRoute

from slide_views import SlideViews, UnknownView
from viewer_assets import FIELDS, OVERLAY, PAGE

STATIC = Path(__file__).resolve().parent / "static"
ROUTE = re.compile(r"(?P<id>[0-9a-f]{32})(?:(?P<page>\.html)|(?P<dzi>\.dzi)|(?P<overlay>_overlay\.png)"
                   r"|(?P<fields>_fields\.json)|_files/(?P<level>\d{1,2})/(?P<col>\d{1,7})_(?P<row>\d{1,7})\.jpeg)")
RENDER_THREADS = 4           # tiles rendered at once (OpenSlide releases the GIL; 2 cores, a few in flight)
CACHE = "private, max-age=600"
NOT_FOUND = Response("Not found", status_code=404, media_type="text/plain")
TYPES = {".js": "text/javascript", ".png": "image/png", ".txt": "text/plain", ".css": "text/css"}

__all__ = ["links", "routes", "viewer_html", "ROUTE", "STATIC"]


def links(view_id: str, *, root: str = "") -> dict[str, str]:
    """One slide's viewer URLs (the shapes ``ROUTE`` matches) under ``root``: ``"/slide/"`` from the Space's
    root, ``""`` from the viewer page itself (which lives under ``/slide/``)."""
    return {"page": f"{root}{view_id}.html", "dzi": f"{root}{view_id}.dzi",
            "tiles": f"{root}{view_id}_files/{{level}}/{{col}}_{{row}}.jpeg",
            "overlay": f"{root}{view_id}_overlay.png", "fields": f"{root}{view_id}_fields.json"}


def routes(views: SlideViews) -> list[APIRoute]:
    """The viewer's routes for ``app_kwargs={"routes": ...}`` of ``demo.launch``."""
    limiter = anyio.CapacityLimiter(RENDER_THREADS)
    static = {path.relative_to(STATIC).as_posix(): path for path in STATIC.rglob("*") if path.is_file()}

    async def slide(name: str) -> Response:
        match = ROUTE.fullmatch(name)
        if match is None:
            return NOT_FOUND
        try:
            return await anyio.to_thread.run_sync(functools.partial(_answer, views, match), limiter=limiter)
        except UnknownView:
            return NOT_FOUND

    async def asset(name: str) -> Response:
        path = static.get(name)       # only the files that were there at start; never a joined path
        if path is None:
            return NOT_FOUND
        return FileResponse(path, media_type=TYPES.get(path.suffix, "application/octet-stream"),
                            headers={"Cache-Control": "public, max-age=86400"})

    return [APIRoute("/slide/{name:path}", slide, methods=["GET"], include_in_schema=False),
            APIRoute("/slide-viewer/{name:path}", asset, methods=["GET"], include_in_schema=False)]


def _answer(views: SlideViews, match: re.Match[str]) -> Response:
    """The response for one matched URL (on a worker thread: OpenSlide reads and JPEG encoding block)."""
    view = views.get(match["id"])
    if match["dzi"]:
        return Response(views.dzi(view.id), media_type="application/xml", headers={"Cache-Control": CACHE})
    if match["level"] is not None:
        data = views.tile(view.id, level=int(match["level"]), col=int(match["col"]), row=int(match["row"]))
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": CACHE})
    if match["page"]:
        return HTMLResponse(viewer_html(view.id, json.loads((view.results / PAGE).read_text(encoding="utf-8"))))
    name, media = (OVERLAY, "image/png") if match["overlay"] else (FIELDS, "application/json")
    path = view.results / name
    if not path.is_file():
        raise UnknownView(view.id)
    return FileResponse(path, media_type=media, headers={"Cache-Control": CACHE})


def viewer_html(view_id: str, facts: dict) -> str:
    """The viewer page: verdict line, legend, overlay controls, the OpenSeadragon canvas, the read-out."""
    verdict = facts["verdict"]
    if verdict.get("abstained"):
        headline = (f"Slide verdict: <b>not recognised</b> ({html.escape(str(verdict.get('abstain_code')))}). "
                    f"{html.escape(str(verdict.get('abstain_reason') or ''))} Coloured fields are the fields that "
                    "were answered one by one; the slide as a whole has no answer.")
    else:
        headline = (f"Slide verdict: <b>{html.escape(str(verdict.get('name')))}</b> "
                    f"{100 * float(verdict.get('confidence') or 0):.0f}% (mean over the answered fields).")
    swatch = '<span class="sw" style="background:rgb({},{},{})"></span>{}'
    legend = " ".join(swatch.format(*c["colour"], html.escape(c["name"])) for c in facts["classes"])
    legend += " " + swatch.format(*facts["refused_colour"], "not recognised")
    mpp = facts.get("um_per_px")
    scale = f"{mpp:.3f} &micro;m/px ({html.escape(str(facts.get('scale_source')))})" if mpp else "scale unknown"
    urls = links(view_id)
    config = json.dumps({"id": view_id, "dzi": urls["dzi"], "overlay": urls["overlay"], "fields": urls["fields"],
                         "page": facts}).replace("</", "<\\/")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(str(facts.get('file')))}</title>
<style>
html, body {{ height: 100%; }}
body {{ margin: 0; font: 14px system-ui, sans-serif; color: #222; display: flex; flex-direction: column; }}
header {{ padding: 6px 10px; background: #f6f6f6; border-bottom: 1px solid #ddd; }}
#osd {{ flex: 1; min-height: 200px; background: #fff; }}
#field-info {{ height: 52px; padding: 2px 10px; background: #f6f6f6; border-top: 1px solid #ddd; overflow: hidden; }}
.sw {{ display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 8px; vertical-align: -1px; }}
</style></head>
<body data-overlay="on">
<header>
<div id="verdict">{headline}</div>
<div>{html.escape(str(facts.get('file')))} · {facts['dimensions'][0]} x {facts['dimensions'][1]} px · {scale} ·
 fields {facts['fields'].get('answered', 0)} answered, {facts['fields'].get('abstained', 0)} not recognised</div>
<div><label><input type="checkbox" id="overlay-toggle" checked> Field map</label>
 <label>opacity <input type="range" id="overlay-opacity" min="0" max="1" step="0.05" value="0.45"></label>
 <span id="legend">{legend}</span></div>
</header>
<div id="osd"></div>
<div id="field-info">Point at a field to see its class, probabilities and reason; click to pin it.</div>
<script src="../slide-viewer/openseadragon/openseadragon.min.js"></script>
<script>window.SLIDE_VIEW = {config};</script>
<script src="../slide-viewer/slide_viewer.js"></script>
</body></html>
"""
