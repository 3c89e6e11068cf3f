"""Gradio Space: classify an image, show where the model looked, and map large images tile by tile.

Run locally: ``python space/app.py`` (serves ``hub_model/`` unless MODEL_REPO or MODEL_DIR is
set; GRADIO_SERVER_NAME / GRADIO_SERVER_PORT pick the address, 127.0.0.1:7860 by default;
EXAMPLES_DIR adds example images; GRADIO_MCP_SERVER=true also serves the endpoints as MCP tools
at /gradio_api/mcp/).

API (named endpoints; the README's "Space API" section has copy-paste code):
    >>> from gradio_client import Client, handle_file
    >>> client = Client("http://127.0.0.1:7860")
    >>> labels, result = client.predict(handle_file("tile.jpeg"), api_name="/predict")
    >>> result["label"], result["abstained"]
    ('class_b', False)
    >>> client.predict([handle_file("a.png"), handle_file("b.png")], api_name="/predict_batch")[0]["label"]
    'class_a'
    >>> client.predict(handle_file("tile.jpeg"), 0.45, api_name="/explain")      # Grad-CAM overlay file
    >>> client.predict(handle_file("slide.png"), api_name="/predict_tiles")       # (tile map, JSON)
    GET /healthz -> {"status": "ok", "model_repo": ..., "model_revision": ..., "model_name": ...}
    GET /slide/<id>.dzi, /slide/<id>_files/<level>/<col>_<row>.jpeg -> a scored slide's DeepZoom tiles
        (the id is in /predict_slide's summary["viewer"]; slide_viewer.py lists every viewer URL)
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import gradio as gr
from fastapi.routing import APIRoute

import imageclf
import panels
import slide_tab
import slide_viewer
from examples import PICK_RULE, find_examples, true_class
from imageclf.model.explain import overlay
from imageclf.model.config import DISCLAIMER
from imageclf.hub.source import ModelSource, ModelSourceError, resolve_model_source
from imageclf.model.predictor import ModelFolderError, Predictor
from imageclf.settings import SETTINGS
from queue_poll import set_queue_poll
from service import DEFAULT_OPACITY, DEFAULT_SCALE, UPLOADS, Service

TOP_CLASSES = 3
SLIDE_LIMIT = "200mb"   # Gradio refuses larger uploads; images are held to MAX_IMAGE_BYTES by the decoder
log = logging.getLogger("space")
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests are noise

# Load once, at start-up: every request reuses the same model.
try:
    SOURCE: ModelSource = resolve_model_source(SETTINGS)
    PREDICTOR = Predictor(SOURCE.folder, settings=SETTINGS)
except (ModelSourceError, ModelFolderError) as err:
    sys.exit(f"Cannot start the Space: {err}")
SERVICE = Service(PREDICTOR, SOURCE)
slide_tab.use_model(PREDICTOR, SOURCE)   # slides are scored by the same loaded model and engine
EXAMPLES = find_examples(SOURCE, folder=SETTINGS.examples_dir)
log.info("Serving %s from %s on %s (%d example images; code: %s)", PREDICTOR.model_name, SOURCE.description,
         PREDICTOR.runtime, len(EXAMPLES), Path(imageclf.__file__).parent)   # which copy of the package runs (the bundle's on the Hub)


def verdict(analysis: Any) -> str:
    """The answer in words, e.g. ``"**Class B — 97% (calibrated)**"``, plus the scale used."""
    return panels.verdict(analysis, domain=PREDICTOR.domain, calibrated=SERVICE.calibrated)


def healthz() -> dict[str, Any]:
    """Liveness and model identity for load balancers and deploy checks (the model is loaded)."""
    return {"status": "ok", **panels.model_fields(SOURCE), "model_name": PREDICTOR.model_name}


# delete_cache: every 5 min, remove cached files older than 10 min (UI uploads, outputs).
with gr.Blocks(title=PREDICTOR.model_name, delete_cache=(300, 600)) as demo:
    gr.Markdown(f"# {PREDICTOR.model_name}")
    gr.Markdown((f"For **{PREDICTOR.domain}** only. The model assumes that is what it is shown: it refuses "
                 "images unlike its training tiles, but other organs only in part (measured rates under About).  \n"
                 if PREDICTOR.domain else "") + f"Model **{PREDICTOR.model_name}** from {panels.source_line(SOURCE)}.")
    with gr.Row(equal_height=False):
        with gr.Column():
            image = gr.Image(label="Image: upload, drop or paste", type="filepath",
                             sources=["upload", "clipboard"], elem_id="input-image")
            scale = gr.Dropdown(["auto", "native"], value=DEFAULT_SCALE, allow_custom_value=True,
                                label="Scale", elem_id="scale",
                                info="auto: estimate the magnification from nucleus size; native: use the "
                                     "pixels as they are; or type microns per pixel (0.5) or a magnification (20x)")
            classify = gr.Button("Classify", variant="primary", elem_id="classify-button")
            examples = (gr.Examples([[str(path)] for path in EXAMPLES], inputs=image, label="Examples",
                                    elem_id="examples", examples_per_page=12, cache_examples=False,
                                    api_visibility="private") if EXAMPLES else None)
            if EXAMPLES:
                gr.Markdown(f"Examples: {PICK_RULE}. Running one shows its true class beside the answer, "
                            "right or wrong.", elem_id="examples-note")
        with gr.Column():
            verdict_md = gr.Markdown(elem_id="verdict")
            top_classes = gr.Label(num_top_classes=TOP_CLASSES, label="Top classes", elem_id="top-classes")
            with gr.Group(visible=False) as cam_box:
                gradcam = gr.Image(label="Grad-CAM of the predicted class", type="numpy", format="png", interactive=False,
                                   elem_id="gradcam")
                gr.HTML(panels.gradcam_legend_html(), elem_id="gradcam-legend")
                opacity = gr.Slider(0.0, 1.0, value=DEFAULT_OPACITY, step=0.05, label="Heatmap opacity",
                                    elem_id="gradcam-opacity")
            with gr.Group(visible=False) as tile_box:
                tile_map = gr.Image(label="Field map (at the model's scale)", type="numpy", format="png", interactive=False,
                                    elem_id="tile-map")
                tile_summary = gr.HTML(elem_id="tile-summary")
    with gr.Accordion("Raw result", open=False):
        raw = gr.JSON(label="Result", elem_id="raw-result")
    with gr.Accordion("Several files at once", open=False):
        files = gr.File(file_count="multiple", label="Image files", elem_id="batch-files")
        classify_all = gr.Button("Classify all", elem_id="batch-button")
        batch_rows = gr.JSON(label="One row per file", elem_id="batch-result")
    with gr.Accordion("Slide: a whole-slide image (SVS, NDPI, MRXS, tiled TIFF, DICOM)", open=False, elem_id="slide"):
        gr.Markdown(f"Up to {SLIDE_LIMIT} per file. Read at the model's physical scale, tissue found on a "
                    "thumbnail, every tissue field scored by the same rule as above. Explore the slide at full "
                    "resolution with the field map over it; download the fields (CSV, GeoJSON) and the merged "
                    "class regions (GeoJSON annotations for QuPath).")
        with gr.Row():
            slide_file = gr.File(label="Whole-slide image", type="filepath", elem_id="slide-file")
            slide_mpp = gr.Textbox(label="Microns per pixel (optional)", elem_id="slide-mpp",
                                   info="empty: the slide's metadata, else estimated from nucleus size")
        with gr.Row():
            score_slide = gr.Button("Score slide", elem_id="slide-button")
            example = slide_tab.example_slide()
            example_button = (gr.Button(f"Score the example slide ({example.name})", elem_id="slide-example-button")
                              if example is not None else None)
        slide_panel = gr.Markdown(elem_id="slide-summary-panel")
        slide_viewer_html = gr.HTML(elem_id="slide-viewer")
        slide_map = gr.Image(label="Heatmap (answered fields by class, grey: not recognised; the slide verdict "
                                   "is stated below the map)", type="numpy", format="png", interactive=False,
                             elem_id="slide-heatmap")
        with gr.Row():
            slide_csv = gr.File(label="fields.csv", elem_id="slide-csv")
            slide_geojson = gr.File(label="fields.geojson (QuPath detections)", elem_id="slide-geojson")
            slide_regions = gr.File(label="regions.geojson (QuPath annotations)", elem_id="slide-regions")
        with gr.Accordion("summary.json", open=False):
            slide_summary = gr.JSON(label="Summary", elem_id="slide-summary")
    gr.Markdown(f"> **Disclaimer:** {PREDICTOR.disclaimer or DISCLAIMER}", elem_id="disclaimer")
    with gr.Accordion("About this model", open=False, elem_id="about-model"):
        gr.Markdown(panels.about_markdown(PREDICTOR, SOURCE))
    cam_state = gr.State()  # {"image", "heatmap"}: the slider re-blends without recomputing Grad-CAM

    shown = [verdict_md, top_classes, raw, gradcam, cam_state, cam_box, tile_map, tile_summary, tile_box]

    def analyze(image_file: dict[str, Any] | None, alpha: float, scale_option: str,
                progress: gr.Progress = gr.Progress()) -> dict[Any, Any]:
        """UI only: one image in, everything shown out, by the same rule as /predict."""
        request = SERVICE.request(image_file, scale_option, forget_upload=False)  # the page still shows this file
        analysis = SERVICE.analyze(request, progress=progress)
        truth = _example_truth(image_file)
        answer = {**_blank(), verdict_md: verdict(analysis) + panels.truth_line(analysis, truth),
                  raw: panels.result_json(analysis, SOURCE)}
        if not analysis.abstained:  # no answer: name no class
            answer[top_classes] = panels.label_value(analysis)
        if analysis.fields is not None and not analysis.one_field:
            answer.update({tile_map: panels.field_map(analysis), tile_summary: panels.field_summary_html(analysis),
                           tile_box: gr.update(visible=True)})
        elif not analysis.abstained and SERVICE.cam.get() is not None:   # the first one loads Keras
            cam = SERVICE.gradcam(request.pixels, analysis.model_input)  # the field is the whole upload, resized
            # A short, fixed title: a class name in it ran into the image's icons at phone width.
            answer.update({gradcam: gr.update(value=_blend(cam, alpha)), cam_state: cam,
                           cam_box: gr.update(visible=True)})
        return answer

    def _example_truth(image_file: dict[str, Any] | None) -> str | None:
        """The true class name of a built-in example (its file name says it), else None."""
        names = {path.name for path in EXAMPLES}
        name = Path(str((image_file or {}).get("orig_name") or (image_file or {}).get("path") or "")).name
        cid = true_class(name, PREDICTOR.class_ids) if name in names else None
        return None if cid is None else PREDICTOR.names[PREDICTOR.class_ids.index(cid)]

    def reblend(cam: dict[str, Any] | None, alpha: float) -> Any:
        """UI only: the same heatmap at a new opacity (no model call)."""
        return gr.skip() if not cam else _blend(cam, alpha)

    def _blend(cam: dict[str, Any], alpha: float) -> Any:
        return overlay(cam["image"], cam["heatmap"], opacity=DEFAULT_OPACITY if alpha is None else alpha)

    def _blank() -> dict[Any, Any]:
        return {verdict_md: "", top_classes: None, raw: None, gradcam: None, cam_state: None,
                cam_box: gr.update(visible=False), tile_map: None, tile_summary: "",
                tile_box: gr.update(visible=False)}

    # UI events: private (not in the API docs, not callable by clients).
    ui = dict(inputs=[image, opacity, scale], outputs=shown, preprocess=False, api_visibility="private")
    event = gr.on([image.upload, classify.click], analyze, **ui)
    if examples is not None:
        event_example = examples.load_input_event.then(analyze, **ui)
        event_example.failure(_blank, outputs=shown, api_visibility="private", queue=False)
    # After an error (or a cleared image) no stale answer may stay next to a different image.
    event.failure(_blank, outputs=shown, api_visibility="private", queue=False)
    image.clear(_blank, outputs=shown, api_visibility="private", queue=False)
    opacity.change(reblend, inputs=[cam_state, opacity], outputs=gradcam, api_visibility="private",
                   queue=False, show_progress="hidden", trigger_mode="always_last")

    # Public API: stable names. /predict runs up to 16 requests at once; their model inputs
    # meet in SERVICE.runner's batches (see batching.py for why not Gradio's batch=True).
    gr.on([], SERVICE.predict, inputs=[image, scale], outputs=[top_classes, raw], api_name="predict",
          preprocess=False, concurrency_limit=16, concurrency_id="predict")
    classify_all.click(SERVICE.predict_batch, inputs=[files, scale], outputs=batch_rows, api_name="predict_batch",
                       concurrency_limit=2, concurrency_id="predict_batch")
    gr.on([], SERVICE.explain, inputs=[image, opacity, scale], outputs=gradcam, api_name="explain",
          preprocess=False)
    gr.on([], SERVICE.predict_tiles, inputs=[image, scale], outputs=[tile_map, raw], api_name="predict_tiles",
          preprocess=False)

    # One slide at a time: a slide is thousands of fields and already fills both cores.
    slide_outputs = [slide_map, slide_panel, slide_summary, slide_csv, slide_geojson, slide_regions, slide_viewer_html]
    score_slide.click(slide_tab.predict_slide, inputs=[slide_file, slide_mpp], outputs=slide_outputs,
                      api_name="predict_slide", concurrency_limit=1, concurrency_id="predict_slide")
    if example_button is not None:
        example_button.click(slide_tab.predict_example_slide, inputs=[slide_mpp], outputs=slide_outputs,
                             api_visibility="private", concurrency_limit=1, concurrency_id="predict_slide")

UPLOADS.registry = demo.upload_file_set  # only real uploads are deleted, never example images


if __name__ == "__main__":
    # Queue: every event runs at most 2 at a time by default (2 CPU cores; /predict overrides it
    # to feed the batch runner); at most 256 requests wait, beyond that callers get "queue full".
    # Uploads above SLIDE_LIMIT are refused before they reach any function (images above
    # MAX_IMAGE_BYTES by the decoder, before any pixel is read). Address and port come from
    # GRADIO_SERVER_NAME / GRADIO_SERVER_PORT and the MCP switch from GRADIO_MCP_SERVER (Gradio
    # reads all three). /healthz is a plain FastAPI route on the same app.
    demo.queue(default_concurrency_limit=2, max_size=256)
    set_queue_poll(demo)   # every 5 ms, not 1: CPU back to the model (space/queue_poll.py)
    demo.launch(
        max_file_size=SLIDE_LIMIT,
        app_kwargs={"routes": [APIRoute("/healthz", healthz, methods=["GET"], include_in_schema=False),
                               *slide_viewer.routes(slide_tab.VIEWS)]},   # /slide/<id>.dzi and its tiles
    )
