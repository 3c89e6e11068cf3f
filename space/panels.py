"""What the Space says in words: the verdict, the tile summary, the model panel, the JSON results.

Every name, number and caveat comes from the model folder (``labels.json``, ``config.json``,
``metrics.json``); nothing here is specific to one model or tissue.

Example:
    >>> verdict(result, domain="stained tissue tiles", calibrated=True)
    '**Class B — 97% (calibrated)**  \\nNext: Class A — 2%.'
"""
from __future__ import annotations

import html
from typing import Any

from model_source import ModelSource
from tiling import ABSTAIN_COLOUR, TileAnalysis, class_colour

GENERIC_LIMITATIONS = (
    "The model has only seen the images in its training data. Other scanners, stains, "
    "magnifications, preparation artefacts and patient groups can make it wrong, and it can be "
    "confidently wrong on images unlike its training data. It gives a probability per class for one "
    "image at a time and knows nothing of the patient. It has not been validated clinically."
)
METRIC_NAMES = {"accuracy": "Accuracy", "macro_f1": "Macro F1", "num_images": "Test images"}


def percent(p: float) -> str:
    """``0.974 -> '97%'``; the extremes are not rounded to a certainty the model does not have."""
    if p >= 0.995:
        return ">99%"
    if p < 0.005:
        return "<1%"
    return f"{p:.0%}"


def verdict(result: dict[str, Any] | None, *, domain: str | None, calibrated: bool) -> str:
    """The single-image answer in words, or the abstention message (no class named)."""
    if not result:
        return ""
    if result.get("abstained"):
        what = domain or "an image this model was trained for"
        reason = result.get("abstain_reason") or "The model abstained."
        return f"**Not recognised as {what}:** {reason} Treat this as no answer."
    ranked = sorted(result["confidences"].items(), key=lambda item: item[1], reverse=True)
    (name, p), rest = ranked[0], ranked[1:2]
    kind = "calibrated" if calibrated else "model probability, not calibrated"
    text = f"**{name} — {percent(p)} ({kind})**"
    if rest:
        text += f"  \nNext: {rest[0][0]} — {percent(rest[0][1])}."
    return text


def tile_verdict(analysis: TileAnalysis, names: list[str]) -> str:
    """Whole-image answer from tile counts, e.g. ``'**Whole image, 340 tissue tiles:** A 62%, ...'``."""
    if analysis.classified == 0:
        return ("**No tissue found:** every tile looks like background (blank or black). "
                "Treat this as no answer.")
    parts = [f"{name} {percent(frac)}" for name, frac in
             sorted(zip(names, analysis.fractions.values(), strict=True), key=lambda item: -item[1])
             if frac > 0]
    if analysis.abstained:
        parts.append(f"not recognised {percent(analysis.abstained_fraction)}")
    text = f"**Whole image, {analysis.classified} tissue tiles classified:** {', '.join(parts)}."
    if analysis.capped:
        text += (f"  \nOnly {analysis.classified} of {analysis.tissue_tiles} tissue tiles were classified "
                 f"(limit {analysis.max_tiles}), spread evenly over the image.")
    return text + "  \nShares of tiles, not a diagnosis of the whole specimen."


def tile_label(analysis: TileAnalysis, names: list[str]) -> dict[str, float]:
    """Tile shares for ``gr.Label`` (abstained tiles as their own entry)."""
    shares = dict(zip(names, analysis.fractions.values(), strict=True))
    if analysis.abstained:
        shares["Not recognised"] = analysis.abstained_fraction
    return shares


def tile_summary_html(analysis: TileAnalysis, names: list[str]) -> str:
    """Colour legend plus counts table for the tile map (names escaped: they come from files)."""
    rows = [(class_colour(i), names[i], analysis.counts.get(cid, 0), analysis.fractions[cid])
            for i, cid in enumerate(analysis.class_ids)]
    rows.append((ABSTAIN_COLOUR, "Not recognised (abstained)", analysis.abstained, analysis.abstained_fraction))
    body = "".join(
        f"<tr><td><span style='display:inline-block;width:1em;height:1em;background:rgb{colour}'>"
        f"</span> {html.escape(name)}</td><td>{count}</td><td>{frac:.1%}</td></tr>"
        for colour, name, count, frac in rows)
    background = len(analysis.tiles) - analysis.tissue_tiles
    th, tw = analysis.tile_size
    note = (f"{len(analysis.tiles)} tiles of {tw} x {th} px ({analysis.grid[0]} rows x {analysis.grid[1]} "
            f"columns); {background} background tiles skipped; {analysis.classified} classified.")
    if analysis.capped:
        note += f" Capped at {analysis.max_tiles} tiles: white outlines mark tissue tiles not classified."
    return (f"<table><thead><tr><th>class</th><th>tiles</th><th>share</th></tr></thead><tbody>{body}"
            f"</tbody></table><p>{html.escape(note)}</p>")


def result_json(result: dict[str, Any], source: ModelSource) -> dict[str, Any]:
    """The ``/predict`` JSON: class id, name, probabilities by class id, abstention, model version."""
    return {
        "label": result["label"], "name": result["name"], "confidence": result["confidence"],
        "probabilities": dict(result["probabilities"]), "abstained": bool(result["abstained"]),
        "abstain_reason": result["abstain_reason"], **model_fields(source),
    }


def tiles_json(analysis: TileAnalysis, names: list[str], source: ModelSource) -> dict[str, Any]:
    """The ``/predict_tiles`` JSON: the most frequent class (``None`` without any) and the tile summary."""
    top = max(analysis.counts, key=analysis.counts.get) if analysis.counts else None
    name = names[analysis.class_ids.index(top)] if top else None
    return {"label": top, "name": name, "tiles": analysis.to_dict(), **model_fields(source)}


def model_fields(source: ModelSource) -> dict[str, str | None]:
    return {"model_repo": source.repo_id, "model_revision": source.commit or source.revision}


def source_line(source: ModelSource) -> str:
    if source.is_local:
        return f"local folder `{source.folder}`"
    commit = f" (commit `{source.commit}`)" if source.commit and source.commit != source.revision else ""
    return f"Hub repo `{source.repo_id}` · revision `{source.revision}`{commit}"


def card_link(source: ModelSource) -> str:
    """The model card: on the Hub at the pinned revision, else the local README path."""
    if source.is_local:
        return f"`{source.folder / 'README.md'}`"
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


def about_markdown(predictor: Any, source: ModelSource) -> str:
    """The "About this model" panel: source, card, data, metrics, classes, limitations."""
    config, h, w = predictor.config, *predictor.input_size
    repo = f"`{source.repo_id}`" if source.repo_id else "none (local folder)"
    revision = f"`{source.commit or source.revision}`" if source.repo_id else "none (local folder)"
    data = config.get("training_data") or config.get("dataset") or "Not stated in the model's config.json."
    lines = [f"**Model:** {predictor.model_name}  ", f"**Source:** {source_line(source)}  ",
             f"**Repo:** {repo} · **pinned revision:** {revision}  ",
             f"**Model card:** {card_link(source)}  ", f"**Training data:** {data}  ",
             f"**Input:** RGB, {h} x {w} px. " + (
                 "Smaller or slightly larger images are resized to it; "
                 f"much larger ones are cut into {h} x {w} px tiles at their own resolution.  "
                 if tiles_large_images(config) else "Every image is resized to it as a whole.  ")]
    rows = metric_rows(predictor.metrics)
    if rows:
        lines += ["", "**Held-out test results** (metrics.json):", "", "| metric | value |", "| --- | --- |",
                  *(f"| {name} | {value} |" for name, value in rows)]
    lines += ["", "| index | class id | name |", "| --- | --- | --- |",
              *(f"| {i} | `{cid}` | {name} |" for i, (cid, name)
                in enumerate(zip(predictor.class_ids, predictor.names, strict=True)))]
    limitations = config.get("limitations") or GENERIC_LIMITATIONS
    if isinstance(limitations, (list, tuple)):
        limitations = " ".join(str(item) for item in limitations)
    if predictor.domain:
        limitations = f"Made for {predictor.domain} only. {limitations}"
    lines += ["", f"**Limitations:** {limitations}"]
    return "\n".join(lines)


def tiles_large_images(config: dict[str, Any]) -> bool:
    """Whether the model classifies tiles of larger images (histology) or whole images (a CT slice,
    a skin photo): config.json ``input_unit``; folders without it are tile models."""
    return config.get("input_unit", "tile") == "tile"


def is_calibrated(predictor: Any) -> bool:
    """True when the model folder records a fitted temperature (metrics.json or config.json)."""
    for source in (predictor.metrics, predictor.config):
        calibration = source.get("calibration")
        if isinstance(calibration, dict) and isinstance(calibration.get("temperature"), (int, float)):
            return True
    return False
