"""What the Space says in words: the verdict, the tile summary, the model panel, the JSON results.

Every name, number and caveat comes from the model folder (``labels.json``, ``config.json``,
``metrics.json``); nothing here is specific to one model or tissue.

Example:
    >>> verdict(result, domain="stained tissue tiles", calibrated=True)
    '**Class B — 97% (calibrated)**  \\nNext: Class A — 2%.'
"""
from __future__ import annotations

import html
import math
from collections import Counter
from typing import Any

import numpy as np

from imageclf.field_map import ABSTAIN_COLOUR, class_colour, render_tile_map
from imageclf.core.refusal import Reason
from imageclf.core.verdict import ImageAnalysis
from imageclf.hub.source import ModelSource
from imageclf.model.explain import colour_scale
from imageclf.model.predictor import Predictor

GENERIC_LIMITATIONS = (
    "The model has only seen the images in its training data. Other scanners, stains, "
    "magnifications, preparation artefacts and patient groups can make it wrong, and it can be "
    "confidently wrong on images unlike its training data. It gives a probability per class for one "
    "image at a time and knows nothing of the patient. It has not been validated clinically."
)
CHECK_NAMES = {Reason.COLOUR: "colour check", Reason.FEATURE: "feature check", Reason.ORGAN: "tissue gate",
               Reason.CONFIDENCE: "confidence floor"}
METRIC_NAMES = {"accuracy": "Accuracy", "macro_f1": "Macro F1", "num_images": "Test images"}


def percent(p: float) -> str:
    """``0.974 -> '97%'``: rounded exactly as ``gr.Label`` rounds its bars (``Math.round``), so the
    verdict and the bars always show the same number."""
    return f"{math.floor(p * 100 + 0.5)}%"


def verdict(analysis: ImageAnalysis | None, *, domain: str | None, calibrated: bool) -> str:
    """The answer in words, or the abstention message (no class named), plus the scale used."""
    if analysis is None:
        return ""
    if analysis.abstained:
        what = domain or "an image this model was trained for"
        return (f"**Not recognised as {what}:** {analysis.abstain_reason} Treat this as no answer."
                f"  \n{scale_line(analysis)}{stain_line(analysis)}")
    ranked = sorted(analysis.confidences.items(), key=lambda item: item[1], reverse=True)
    (name, p), rest = ranked[0], ranked[1:2]
    kind = "calibrated" if calibrated else "model probability, not calibrated"
    fields = analysis.fields
    where = "" if analysis.one_field else f", mean over {fields.classified - fields.abstained} tissue fields"
    text = f"**{name} — {percent(p)} ({kind}{where})**"
    if rest:
        text += f"  \nNext: {rest[0][0]} — {percent(rest[0][1])}."
    return text + f"  \n{scale_line(analysis)}{stain_line(analysis)}"


def stain_line(analysis: ImageAnalysis) -> str:
    """For a model that normalises stains: whether this image's were (the page shows the pixels as sent)."""
    estimate = analysis.stain
    if estimate is None:
        return ""
    if estimate.ok:
        return ("  \nStains: normalised to the model's reference (Macenko, estimated from this image's tissue) "
                "before the model; shown here as sent.")
    why = "too little tissue" if estimate.status == "too_little_tissue" else "one stain only"
    return f"  \nStains: kept as sent ({why} to estimate them)."


def gradcam_legend_html() -> str:
    """Colour bar of the Grad-CAM heatmap plus one sentence on what it shows and does not show."""
    stops = ", ".join(f"rgb{colour}" for colour in colour_scale())
    return (f"<div style='display:flex;align-items:center;gap:.5em;font-size:.85em'><span>low</span>"
            f"<span style='flex:1;height:.8em;border-radius:3px;background:linear-gradient(to right, {stops})'>"
            "</span><span>high</span></div><p style='font-size:.85em;margin:.3em 0 0'>Grad-CAM: how much each "
            "region raised the score of the predicted class. It shows what the model used, not whether the "
            "answer is right, and it is not an outline of a tumour.</p>")


def truth_line(analysis: ImageAnalysis, truth: str | None) -> str:
    """For a built-in example: its true class beside the answer, right or wrong."""
    if truth is None:
        return ""
    if analysis.abstained:
        outcome = "the model gave no answer"
    else:
        outcome = "the model is right" if analysis.name == truth else f"**the model is wrong** (it said {analysis.name})"
    return f"  \n**True class (test-split example):** {truth} — {outcome}."


def scale_line(analysis: ImageAnalysis) -> str:
    """How the image was brought to the model's scale, in one line."""
    decision = analysis.scale
    text = f"Scale: {decision.method}"
    if decision.mode != "native" or decision.relative_size != 1.0:
        text += f"; nuclei {decision.relative_size:.2f}x their training size"
    fields = analysis.fields
    if analysis.one_field:
        side = fields.tile_size[0]
        text += f"; answered as one field ({side} px)"
    elif fields is not None:
        text += (f"; resampled x{decision.factor:.2f} into {fields.tile_size[1]} x {fields.tile_size[0]} px fields, "
                 f"{fields.classified} of {fields.tissue_tiles} tissue fields classified")
        if fields.abstained:
            text += f", {fields.abstained} not recognised"
    return text + "."


def label_value(analysis: ImageAnalysis) -> dict[str, float] | str:
    """The ``gr.Label`` value: {class name: p}, or just "Not recognised" (no class, no number)."""
    return "Not recognised" if analysis.abstained else analysis.confidences


def field_summary_html(analysis: ImageAnalysis) -> str:
    """Colour legend plus counts table for the field map (names escaped: they come from files)."""
    fields = analysis.fields
    if fields is None:
        return ""
    rows = [] if analysis.abstained else [
        (class_colour(i), analysis.names[i], fields.counts.get(cid, 0), fields.fractions[cid])
        for i, cid in enumerate(analysis.class_ids)]
    refused = Counter(tile.reason for tile in fields.cells if tile.status == "classified" and tile.abstained)
    for reason, count in sorted(refused.items(), key=lambda item: -item[1]):   # grouped by code, not by sentence
        rows.append((ABSTAIN_COLOUR, f"Not recognised: {CHECK_NAMES.get(reason, reason.value)}", count,
                     count / fields.classified))
    if not refused:
        rows.append((ABSTAIN_COLOUR, "Not recognised", 0, 0.0))
    body = "".join(
        f"<tr><td><span style='display:inline-block;width:1em;height:1em;background:rgb{colour}'>"
        f"</span> {html.escape(name)}</td><td>{count}</td><td>{frac:.1%}</td></tr>"
        for colour, name, count, frac in rows)
    background = len(fields.cells) - fields.tissue_tiles
    th, tw = fields.tile_size
    note = (f"{len(fields.cells)} fields of {tw} x {th} px at the model's scale ({fields.grid[0]} rows x "
            f"{fields.grid[1]} columns); {background} background fields skipped; {fields.classified} classified.")
    if fields.capped:
        note += f" Capped at {fields.max_fields} fields: white outlines mark tissue fields not classified."
    return (f"<table><thead><tr><th>class</th><th>fields</th><th>share</th></tr></thead><tbody>{body}"
            f"</tbody></table><p>{html.escape(note)}</p>")


def field_map(analysis: ImageAnalysis) -> np.ndarray:
    """The rescaled image with each classified field tinted (a blank square when there is no image)."""
    if analysis.fields is None or analysis.view is None:
        return np.full((64, 64, 3), 255, np.uint8)
    # An image without an answer gets grey fields only: no class colour for what is not answered.
    return render_tile_map(analysis.view, analysis.fields, grey=analysis.abstained)


def result_json(analysis: ImageAnalysis, source: ModelSource) -> dict[str, Any]:
    """The JSON every endpoint returns: the shared result plus the model version."""
    return {**analysis.to_json(), **model_fields(source)}


def model_fields(source: ModelSource) -> dict[str, str | None]:
    return {"model_repo": source.repo_id, "model_revision": source.commit or source.revision}


def source_line(source: ModelSource) -> str:
    """Where the model comes from, for the page: a Hub repo and revision, or "local folder".

    Never the folder's path: that is the server's own file system, not the model's identity.
    """
    if source.is_local:
        return "local folder (no Hub revision)"
    commit = f" (commit `{source.commit}`)" if source.commit and source.commit != source.revision else ""
    return f"Hub repo `{source.repo_id}` · revision `{source.revision}`{commit}"


def card_link(source: ModelSource) -> str:
    """The model card: on the Hub at the pinned revision, else named in the local folder (no path)."""
    if source.is_local:
        return "`README.md` in the local model folder"
    revision = source.commit or source.revision or "main"
    return f"https://huggingface.co/{source.repo_id}/blob/{revision}/README.md"


def metric_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, value) rows from metrics.json: top-level numbers, test ECE and abstention if present."""
    rows = []
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            name = METRIC_NAMES.get(key, key.replace("_", " ").capitalize())
            rows.append((name, str(value) if isinstance(value, int) else f"{value:.2%}"))
    calibration = metrics.get("calibration") or {}
    ece = calibration.get("ece_15_bins_test_after", calibration.get("ece_15_bins_test_before"))
    if isinstance(ece, (int, float)):
        rows.append(("Calibration error (ECE, 15 bins)", f"{ece:.2%}"))
    abstention = (metrics.get("abstention") or {}).get("test") or {}
    if isinstance(abstention.get("abstained"), (int, float)):
        rows.append(("Abstained on test images", f"{abstention['abstained']:.2%}"))
    return rows


def precision_rule_line(rule: dict[str, Any]) -> str:
    """The runtime's precision rule in one line: each candidate's verdict (failed clauses named), when measured."""
    verdicts = [f"{name} " + ("passed" if c.get("passed") else
                              f"failed ({', '.join(k for k, ok in c.get('clauses', {}).items() if not ok)})")
                for name, c in rule.get("candidates", {}).items()]
    return (f"**Precision rule** (decisions, calibration and stress rows against Keras; bf16 serves only where the CPU "
            f"has it natively and it passed; measured {rule.get('measured', '?')}): {', '.join(verdicts)}.  ")


def about_markdown(predictor: Predictor, source: ModelSource) -> str:
    """The "About this model" panel: source, card, data, metrics, classes, limitations."""
    config, h, w = predictor.model_config, *predictor.input_size
    repo = f"`{source.repo_id}`" if source.repo_id else "none (local folder)"
    revision = f"`{source.commit or source.revision}`" if source.repo_id else "none (local folder)"
    data = config.dataset or "Not stated in the model's config.json."
    lines = [f"**Model:** {predictor.model_name}  ", f"**Source:** {source_line(source)}  ",
             f"**Repo:** {repo} · **pinned revision:** {revision}  ",
             f"**Model card:** {card_link(source)}  ", f"**Training data:** {data}  ",
             f"**Input:** RGB, {h} x {w} px. " + (
                 "Each image is first brought to the training magnification (scale: auto estimates it "
                 "from nucleus size); then it is one field, resized to the input, or, when larger, "
                 f"cut into {h} x {w} px fields whose answers are averaged.  "
                 if config.input_unit == "tile" else "Every image is resized to it as a whole.  ")]
    if config.scale is not None:
        fov = config.scale.field_of_view_px
        mpp = (f"{config.scale.microns_per_pixel:g} um/px" if config.scale.microns_per_pixel
               else f"microns per pixel unknown ({config.scale.microns_per_pixel_note})")
        lines.append(f"**Scale:** one input covers {fov or 'an unstated number of'} source px; {mpp}  ")
    if config.stain is not None:
        lines.append(f"**Stains:** every field is mapped to reference stains ({config.stain.method}, version "
                     f"{config.stain.version}; {config.stain.fitted_on or 'fitted on the training tiles'}) before the "
                     "model; the colour check, Grad-CAM and this page see the pixels as sent.  ")
    lines.append(f"**Runtime:** {predictor.runtime}" + (" (Grad-CAM runs on Keras)  " if predictor.runtime != "keras" else "  "))
    if predictor.runtime != "keras" and config.runtime is not None and config.runtime.precision_rule:
        lines.append(precision_rule_line(config.runtime.precision_rule))
    rows = metric_rows(predictor.metrics)
    if rows:
        lines += ["", "**Held-out test results** (metrics.json):", "", "| metric | value |", "| --- | --- |",
                  *(f"| {name} | {value} |" for name, value in rows)]
    lines += ["", "| index | class id | name |", "| --- | --- | --- |",
              *(f"| {i} | `{cid}` | {name} |" for i, (cid, name)
                in enumerate(zip(predictor.class_ids, predictor.names, strict=True)))]
    limitations = config.limitations or GENERIC_LIMITATIONS
    if isinstance(limitations, (list, tuple)):
        limitations = " ".join(str(item) for item in limitations)
    if predictor.domain:
        limitations = f"Made for {predictor.domain} only. {limitations}"
    lines += ["", f"**Limitations:** {limitations}"]
    return "\n".join(lines)
