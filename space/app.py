"""Gradio Space: classify one image with the model named by the environment.

Run locally: ``python space/app.py`` (serves ``hub_model/`` unless MODEL_REPO or MODEL_DIR is
set; GRADIO_SERVER_NAME / GRADIO_SERVER_PORT pick the address, 127.0.0.1:7860 by default).

API (one public endpoint), for example:
    >>> from gradio_client import Client, handle_file
    >>> client = Client("http://127.0.0.1:7860")
    >>> client.predict(handle_file("tile.jpeg"), api_name="/predict")
    {'label': 'Some class', 'confidences': [{'label': 'Some class', 'confidence': 0.97}, ...]}
"""
from __future__ import annotations

import base64
import binascii
import html
import logging
import sys
from typing import Any

import gradio as gr

from model_source import ModelSource, ModelSourceError, resolve_model_source
from predictor import ImageError, ModelFolderError, Predictor

TOP_CLASSES = 3
API_DESCRIPTION = ("Classify one image file. Returns a Label: the top class name and up to "
                   f"{TOP_CLASSES} {{label, confidence}} pairs, best first.")
DEFAULT_DISCLAIMER = (
    "Research and education demo only. This is not a medical or diagnostic device; "
    "do not use its output for diagnosis or treatment decisions."
)
log = logging.getLogger("space")
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests are noise

# Load once, at start-up: every request reuses the same model.
try:
    SOURCE: ModelSource = resolve_model_source()
    PREDICTOR = Predictor(SOURCE.folder)
except (ModelSourceError, ModelFolderError) as err:
    sys.exit(f"Cannot start the Space: {err}")
log.info("Serving %s from %s", PREDICTOR.model_name, SOURCE.description)


def predict(image: dict[str, Any] | None) -> tuple[dict[str, float], dict[str, Any]]:
    """Classify one image file; returns the class probabilities keyed by class name.

    The upload arrives unprocessed (``preprocess=False``) so it is decoded by the same
    ``imaging.decode_image`` as in training, and an unreadable file becomes a clear message.
    """
    if not image:
        raise gr.Error("No image received. Upload, drag or paste an image first.",
                       print_exception=False)
    try:
        result = PREDICTOR.predict(_image_data(image))
    except ImageError as err:
        raise gr.Error(html.escape(str(err)), title="Cannot read this image",
                       print_exception=False) from None
    return result["confidences"], result


def verdict(result: dict[str, Any] | None) -> str:
    """The prediction in words, e.g. ``"**Most likely: X** (97% model probability)."``."""
    if not result:
        return ""
    ranked = sorted(result["confidences"].items(), key=lambda item: item[1], reverse=True)
    (name, p), runner_up = ranked[0], ranked[1:2]
    if result.get("abstained"):
        # No class is named: the probabilities beside it are not an answer for this image.
        domain = PREDICTOR.domain or "an image this model was trained for"
        reason = result.get("abstain_reason") or "The model abstained."
        return f"**Not recognised as {domain}:** {reason} Treat this as no answer."
    text = f"**Most likely: {name}** ({p:.0%} model probability)."
    if runner_up:
        text += f" Next: {runner_up[0][0]} ({runner_up[0][1]:.0%})."
    return text


def _blank() -> tuple[None, None, str]:
    return None, None, ""


def _image_data(payload: dict[str, Any]) -> str | bytes:
    """The uploaded file's path in Gradio's upload cache, or the bytes of a data: URL."""
    if payload.get("path"):
        return str(payload["path"])
    url = payload.get("url") or ""
    if url.startswith("data:") and "," in url:
        try:
            return base64.b64decode(url.split(",", 1)[1], validate=True)
        except (binascii.Error, ValueError):
            raise ImageError("The image data is not valid base64.") from None
    raise ImageError("No image data received.")


def _source_line(source: ModelSource) -> str:
    if source.is_local:
        return f"local folder `{source.folder}`"
    commit = f" (commit `{source.commit}`)" if source.commit and source.commit != source.revision else ""
    return f"Hub repo `{source.repo_id}` · revision `{source.revision}`{commit}"


def _about(predictor: Predictor, source: ModelSource) -> str:
    rows = "\n".join(f"| {i} | `{cid}` | {name} |"
                     for i, (cid, name) in enumerate(zip(predictor.class_ids, predictor.names, strict=True)))
    lines = [f"**Model:** {predictor.model_name}  ", f"**Source:** {_source_line(source)}  ",
             f"**Input:** RGB, {predictor.input_size[0]} x {predictor.input_size[1]} px "
             "(images are resized)  "]
    scores = [f"{key.replace('_', ' ')} {predictor.metrics[key]:.3f}"
              for key in ("accuracy", "macro_f1")
              if isinstance(predictor.metrics.get(key), (int, float))]
    if scores:
        lines.append(f"**Held-out test:** {', '.join(scores)} (from metrics.json)  ")
    lines += ["", "| index | class id | name |", "| --- | --- | --- |", rows, "",
              "**API:** `Client(space).predict(handle_file(path), api_name=\"/predict\")` "
              "returns `{label, confidences}`."]
    return "\n".join(lines)


with gr.Blocks(title=PREDICTOR.model_name) as demo:
    gr.Markdown(f"# {PREDICTOR.model_name}")
    gr.Markdown(
        (f"For **{PREDICTOR.domain}** only; other images get meaningless answers.  \n"
         if PREDICTOR.domain else "")
        + f"Model **{PREDICTOR.model_name}** from {_source_line(SOURCE)}."
    )
    with gr.Row(equal_height=False):
        with gr.Column():
            image = gr.Image(label="Image", type="filepath", sources=["upload", "clipboard"])
            classify = gr.Button("Classify", variant="primary")
        with gr.Column():
            label = gr.Label(num_top_classes=TOP_CLASSES, label="Top classes")
            verdict_md = gr.Markdown()
    gr.Markdown(f"> **Disclaimer:** {PREDICTOR.disclaimer or DEFAULT_DISCLAIMER}")
    with gr.Accordion("About this model", open=False):
        gr.Markdown(_about(PREDICTOR, SOURCE))
    result_state = gr.State()

    # The only public endpoint: "/predict" (file in, label confidences out; State is not
    # part of the client's answer). The verdict line is a private follow-up step.
    answer_outputs = [label, result_state, verdict_md]
    event = gr.on([image.upload, classify.click], predict, inputs=image, outputs=[label, result_state],
                  api_name="predict", api_description=API_DESCRIPTION, preprocess=False)
    event.success(verdict, inputs=result_state, outputs=verdict_md, api_visibility="private")
    # After an error (or a cleared image) no stale answer may stay next to a different image.
    event.failure(_blank, outputs=answer_outputs, api_visibility="private", queue=False)
    image.clear(_blank, outputs=answer_outputs, api_visibility="private", queue=False)


if __name__ == "__main__":
    # Address and port come from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (Gradio reads them).
    demo.queue(default_concurrency_limit=1, max_size=64).launch()
