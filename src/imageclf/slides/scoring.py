"""Score one slide: fields at the model's physical scale -> the field engine -> the refusal rule.

The same engine (``imageclf.core.engine.FieldEngine``) and refusal rule (``imageclf.core.refusal``)
as every other client: each field is judged by ``judge_fields`` on the exact pixels the model saw
(:mod:`imageclf.slides.fields`), the slide by ``judge_image`` (no tissue, too many fields refused,
fields that disagree) and its scale by ``judge_scale`` (no nuclei to measure, a magnification far
from the model's). Only the reading differs from an upload: the slide's microns per pixel come
from ``--mpp``, its metadata or its nuclei (:mod:`imageclf.slides.physical`), and fields are read
from the pyramid level nearest above the model's scale.

A plain image (PNG, JPEG, a TIFF that is not a pyramid) goes the ordinary image path instead
(``imageclf.core.rule.analyze``): :func:`score_image`.

Example:
    >>> model = SlideModel.from_folder("hub_model")                       # imageclf.slides.results
    >>> result = score_slide("CMU-1-Small-Region.svs", model, progress=lambda done, total: None)
    >>> result.scale.source, len(result.fields), result.verdict.code
    ('metadata', 109, 'fields_refused')
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

from imageclf.core import refusal
from imageclf.core.imaging import decode_image
from imageclf.core.refusal import Reason
from imageclf.core.request import Request, ScaleRequest
from imageclf.core.rule import CHUNK, analyze
from imageclf.core.scale import ESTIMATOR, ScaleDecision
from imageclf.model.config import ScaleSpec
from imageclf.slides.fields import Progress, check_size, plan_fields, score_fields
from imageclf.slides.physical import (ESTIMATE_CROPS, ESTIMATE_SIDE, SlideScale, check_mpp, choose_level,
                                      estimate_slide_mpp)
from imageclf.slides.reader import SlideError, SlideReader
from imageclf.slides.results import FieldTable, ImageResult, SlideModel, SlideResult
from imageclf.slides.tissue import MASK_UM_PER_PX, find_tissue

THUMBNAIL_SIDE = 4096          # longest side of the thumbnail the tissue mask is computed on
MAP_SIDE = 2048                # longest side of the heatmap's thumbnail
ASSUMED_MPP = 0.25             # only to size the thumbnail of a slide whose scale is not known yet

__all__ = ["score_image", "score_slide"]


def score_slide(path: str | os.PathLike, model: SlideModel, *, mpp: float | None = None, level: int | None = None,
                progress: Progress | None = None, batch: int = CHUNK) -> SlideResult:
    """Score every tissue field of one slide. ``mpp`` overrides the metadata; ``level`` forces the
    pyramid level read (default: the level nearest above the model's scale).

    Raises:
        SlideError: not a slide, damaged, absurd dimensions or scale, smaller than one field.
    """
    spec, check, start = model.spec, model.spec.refusal.abstain.colour, time.perf_counter()
    mpp = None if mpp is None else check_mpp(mpp, "--mpp")
    timings: dict[str, float] = {}
    with SlideReader(path) as reader:
        width, height = reader.dimensions
        metadata, note = reader.metadata_mpp, ""
        if metadata is not None:
            try:
                check_mpp(metadata, "The slide's metadata mpp")
            except SlideError as err:
                metadata, note = None, f" (metadata ignored: {err})"
        known = mpp if mpp is not None else metadata
        if known is not None:
            check_size(reader, known, model)
        downsample = max(1.0, width / THUMBNAIL_SIDE, height / THUMBNAIL_SIDE, MASK_UM_PER_PX / (known or ASSUMED_MPP))
        tissue_thumbnail = reader.thumbnail(downsample)
        tissue = find_tissue(tissue_thumbnail, downsample=downsample, mpp=known, check=check)
        map_downsample = max(1.0, width / MAP_SIDE, height / MAP_SIDE)
        thumbnail, thumbnail_downsample = ((reader.thumbnail(map_downsample), map_downsample)
                                           if map_downsample < 0.8 * downsample    # small slide: a sharper map
                                           else (tissue_thumbnail, downsample))
        timings["tissue_s"] = time.perf_counter() - start
        windows = tissue.richest(ESTIMATE_SIDE, ESTIMATE_CROPS)
        estimate = estimate_slide_mpp(reader, windows, spec, model.mpp, check) if windows else None
        scale = _slide_scale(mpp, metadata, estimate, note, len(windows))
        if known is None and scale.mpp is not None:   # the mask's morphology and area, in microns now
            tissue = find_tissue(tissue_thumbnail, downsample=downsample, mpp=scale.mpp, check=check)
        timings["scale_s"] = time.perf_counter() - start - timings["tissue_s"]
        result = dict(path=Path(path), slide=reader.describe(), scale=scale, model=model, tissue=tissue,
                      thumbnail=thumbnail, thumbnail_downsample=thumbnail_downsample)
        empty = FieldTable.empty(len(spec.class_ids))
        if not tissue.mask.any():
            verdict = refusal.judge_image([], None, one_field=False, rule=spec.refusal)
            return SlideResult(fields=empty, verdict=verdict, probabilities=None, timings=_total(timings, start),
                               **result)
        if scale.mpp is None:
            unmeasured = ScaleDecision("auto", 1.0, f"auto: nucleus size ({ESTIMATOR})", measured=False)
            return SlideResult(fields=empty, verdict=refusal.judge_scale(unmeasured, spec.scale), probabilities=None,
                               timings=_total(timings, start), **result)
        chosen = (choose_level(reader.level_downsamples, slide_mpp=scale.mpp, model_mpp=model.mpp)
                  if level is None else _valid_level(level, reader))
        plan = plan_fields(reader, slide_mpp=scale.mpp, model=model, level=chosen, tissue=tissue)
        decision = ScaleDecision("microns_per_pixel", plan.relative_size,
                                 f"slide: {plan.level_mpp:.4g} um/px at level {chosen}")
        scale_refusal = refusal.judge_scale(decision, spec.scale)
        if scale_refusal is not None:
            return SlideResult(fields=empty, verdict=scale_refusal, probabilities=None, reading=plan.to_dict(),
                               timings=_total(timings, start), **result)
        fields, reading = score_fields(reader, plan, model, progress=progress, batch=batch)
    timings.update(reading)
    answered = fields.probabilities[fields.answered]
    mean = answered.mean(axis=0) if len(answered) else None
    verdict = refusal.judge_image(list(fields.reasons), mean, one_field=False, rule=spec.refusal)
    if verdict is not None:     # as for an image: no class probabilities for a slide without an answer
        mean = None if verdict.reason is not Reason.FIELDS_DISAGREE else mean
    return SlideResult(fields=fields, verdict=verdict, probabilities=mean, reading=plan.to_dict(),
                       timings=_total(timings, start), **result)


def score_image(path: str | os.PathLike, model: SlideModel, *, mpp: float | None = None) -> ImageResult:
    """A plain image through the ordinary rule: ``auto`` scale, or ``mpp`` against the model's mpp."""
    start = time.perf_counter()
    rgb, spec = decode_image(path), model.spec
    mpp = None if mpp is None else check_mpp(mpp, "--mpp")
    if mpp is None:
        analysis = analyze(Request(rgb), spec, model.engine)
    else:   # the same rule, told the model's microns per pixel (from its config or model_scale.json)
        scale_spec = spec.scale or ScaleSpec(None, None, None, None)
        told = dataclasses.replace(spec, scale=dataclasses.replace(scale_spec, microns_per_pixel=model.mpp))
        analysis = analyze(Request(rgb, ScaleRequest("microns_per_pixel", mpp)), told, model.engine)
    decision = analysis.scale
    if mpp is not None:
        scale = SlideScale(mpp, "override", "--mpp")
    elif decision.mode == "auto" and decision.measured:
        scale = SlideScale(model.mpp / decision.relative_size, "estimate", decision.method,
                           model.mpp / decision.relative_size)
    else:
        scale = SlideScale(None, "unknown", decision.method)
    return ImageResult(Path(path), analysis, model, scale, {"total_s": time.perf_counter() - start})


def _slide_scale(override: float | None, metadata: float | None, estimate: float | None, note: str,
                 crops: int) -> SlideScale:
    if override is not None:
        return SlideScale(override, "override", "--mpp" + note, estimate)
    if metadata is not None:
        return SlideScale(metadata, "metadata", "openslide.mpp-x/y", estimate)
    if estimate is not None:
        return SlideScale(estimate, "estimate", f"nucleus size ({ESTIMATOR}) on {crops} level-0 tissue crops of "
                                                f"{ESTIMATE_SIDE} px" + note, estimate)
    return SlideScale(None, "unknown", "no mpp in the metadata and no stained nuclei to measure" + note)


def _valid_level(level: int, reader: SlideReader) -> int:
    if not 0 <= level < len(reader.level_downsamples):
        raise SlideError(f"Level {level} does not exist; {reader.path.name} has {len(reader.level_downsamples)}.")
    return level


def _total(timings: dict[str, float], start: float) -> dict[str, float]:
    return {**timings, "total_s": time.perf_counter() - start}
