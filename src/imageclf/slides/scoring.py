"""Score one slide: plan its fields at the model's physical scale, then the one field loop.

Only the planning differs from an upload: the slide's microns per pixel come from the stated scale,
its metadata (OpenSlide's mpp, else the TIFF resolution tags) or its nuclei
(:mod:`imageclf.slides.physical`); fields are laid on the tissue mask and read lazily from the
pyramid level nearest above the model's scale (:mod:`imageclf.slides.fields`); the slide's stains
are estimated once, from a sample of its tissue fields. Then the same loop as every image
(``imageclf.core.pipeline.run``: stain step, engine, ``refusal.judge_fields`` per batch) and the
same merge (``pipeline.merge``: no tissue, too many fields refused, fields that disagree); the scale
is judged by ``refusal.judge_scale`` (no nuclei to measure, a magnification far from the model's).

A plain image (PNG, JPEG, a TIFF that is not a pyramid) goes the ordinary image path instead
(``imageclf.core.rule.analyze``): :func:`score_image`.

Example:
    >>> model = SlideModel.from_folder("hub_model")                       # imageclf.slides.slide_model
    >>> result = score_slide("CMU-1-Small-Region.svs", model, progress=lambda done, total: None)
    >>> result.scale.source, len(result.fields), result.verdict.abstain_code
    ('metadata', 109, 'fields_refused')
"""
from __future__ import annotations

import dataclasses
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from imageclf.core import pipeline, refusal
from imageclf.core.field_table import FieldTable
from imageclf.core.imaging import decode_image
from imageclf.core.pipeline import CHUNK, Progress
from imageclf.core.refusal import Refusal
from imageclf.core.request import make_request
from imageclf.core.rule import analyze
from imageclf.core.scale import ESTIMATOR, ScaleDecision, ScaleRequest
from imageclf.core.stain import StainEstimate, estimate_stains
from imageclf.core.verdict import Verdict
from imageclf.slides.fields import SlideFields, check_size, plan_grid
from imageclf.slides.physical import (ESTIMATE_CROPS, ESTIMATE_SIDE, SlideScale, check_mpp, choose_level,
                                      estimate_slide_mpp)
from imageclf.slides.reader import SlideError, SlideReader
from imageclf.slides.results import ImageResult, SlideResult
from imageclf.slides.slide_model import SlideModel
from imageclf.slides.tissue import MASK_UM_PER_PX, find_tissue

THUMBNAIL_SIDE = 4096          # longest side of the thumbnail the tissue mask is computed on
MAP_SIDE = 2048                # longest side of the heatmap's thumbnail
ASSUMED_MPP = 0.25             # only to size the thumbnail of a slide whose scale is not known yet
STAIN_FIELDS = 32              # tissue fields (spread over the slide) its one stain estimate is made from

__all__ = ["score_image", "score_slide"]


def score_slide(path: str | os.PathLike, model: SlideModel, *, scale: ScaleRequest | None = None,
                level: int | None = None, progress: Progress | None = None, batch: int = CHUNK) -> SlideResult:
    """Score every tissue field of one slide. ``scale``: a stated microns per pixel overrides the
    metadata (``auto`` or ``None``: the metadata, else the nuclei); ``level`` forces the pyramid level
    read (default: the level nearest above the model's scale).

    Raises:
        SlideError: not a slide, damaged, absurd dimensions or scale, smaller than one field, or a scale
            that is neither ``auto`` nor microns per pixel.
    """
    spec, check, start = model.spec, model.spec.refusal.abstain.colour, time.perf_counter()
    mpp = _stated_mpp(scale)
    timings: dict[str, float] = {}
    with SlideReader(path) as reader, ThreadPoolExecutor(max_workers=1, thread_name_prefix="slide-aside") as aside:
        width, height = reader.dimensions
        metadata, metadata_source, note = *(reader.metadata_mpp or (None, None)), ""
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
        # Made aside, beside the field loop, not before it: nothing plans with them. The heatmap's sharper
        # thumbnail (a small slide), and the nucleus estimate when the scale is known (then it is only a
        # check reported with it). Before the loop they left one of the two cores idle for 0.3-0.6 s.
        map_downsample = max(1.0, width / MAP_SIDE, height / MAP_SIDE)
        sharper = aside.submit(reader.thumbnail, map_downsample) if map_downsample < 0.8 * downsample else None
        timings["tissue_s"] = time.perf_counter() - start
        windows = tissue.richest(ESTIMATE_SIDE, ESTIMATE_CROPS)
        checking = (aside.submit(estimate_slide_mpp, reader, windows, spec, model.mpp, check)
                    if windows and known is not None else None)
        estimate = estimate_slide_mpp(reader, windows, spec, model.mpp, check) if windows and known is None else None
        slide_scale = _slide_scale(mpp, metadata, metadata_source, estimate, note, len(windows))
        if known is None and slide_scale.mpp is not None:   # the mask's morphology and area, in microns now
            tissue = find_tissue(tissue_thumbnail, downsample=downsample, mpp=slide_scale.mpp, check=check)
        timings["scale_s"] = time.perf_counter() - start - timings["tissue_s"]
        described = reader.describe()

        def answer(fields: FieldTable, verdict: Verdict, **rest: object) -> SlideResult:
            """The result, with what was made aside."""
            scale_ = slide_scale if checking is None else dataclasses.replace(slide_scale, estimate=checking.result())
            thumbnail = (tissue_thumbnail, downsample) if sharper is None else (sharper.result(), map_downsample)
            return SlideResult(path=Path(path), slide=described, scale=scale_, model=model, tissue=tissue,
                               thumbnail=thumbnail[0], thumbnail_downsample=thumbnail[1], fields=fields,
                               verdict=verdict, timings=_total({**timings, **fields.timings}, start), **rest)

        empty = FieldTable.empty(len(spec.class_ids))
        if not tissue.mask.any():
            return answer(empty, pipeline.merge(empty, spec, one_field=False))
        if slide_scale.mpp is None:
            unmeasured = ScaleDecision("auto", 1.0, f"auto: nucleus size ({ESTIMATOR})", measured=False)
            return answer(empty, _refused(refusal.judge_scale(unmeasured, spec.scale), model))
        chosen = (choose_level(reader.level_downsamples, slide_mpp=slide_scale.mpp, model_mpp=model.mpp)
                  if level is None else _valid_level(level, reader))
        grid = plan_grid(reader, slide_mpp=slide_scale.mpp, model=model, level=chosen, tissue=tissue)
        decision = ScaleDecision("microns_per_pixel", grid.relative_size,
                                 f"slide: {grid.level_mpp:.4g} um/px at level {chosen}")
        scale_refusal = refusal.judge_scale(decision, spec.scale)
        if scale_refusal is not None:
            return answer(empty, _refused(scale_refusal, model), reading=grid.to_dict())
        fields = SlideFields(reader, grid, tuple(spec.input_size))
        tick = time.perf_counter()
        stains = _slide_stains(fields, model)
        timings["stain_estimate_s"] = time.perf_counter() - tick
        stain_refusal = refusal.judge_stain(stains, spec.stain)
        if stain_refusal is not None:
            return answer(empty, _refused(stain_refusal, model), reading=grid.to_dict(), stain=stains)
        plan = pipeline.FieldPlan(fields, fields.boxes(), grid.tissue, stain=stains)
        table = pipeline.run(plan, model.engine, spec, batch=batch, progress=progress)
        return answer(table, pipeline.merge(table, spec, one_field=False), reading=grid.to_dict(), stain=stains)


def score_image(path: str | os.PathLike, model: SlideModel, *, scale: ScaleRequest | None = None) -> ImageResult:
    """A plain image through the ordinary rule: ``auto`` scale, or a stated microns per pixel against the
    model's own (its config.json)."""
    start = time.perf_counter()
    rgb, spec = decode_image(path), model.spec
    mpp = _stated_mpp(scale)
    analysis = analyze(make_request(rgb, scale or ScaleRequest("auto"), spec.scale), spec, model.engine)
    decision = analysis.scale
    if mpp is not None:
        image_scale = SlideScale(mpp, "override", "stated scale")
    elif decision.mode == "auto" and decision.measured:
        image_scale = SlideScale(model.mpp / decision.relative_size, "estimate", decision.method,
                                 model.mpp / decision.relative_size)
    else:
        image_scale = SlideScale(None, "unknown", decision.method)
    return ImageResult(Path(path), analysis, model, image_scale, {"total_s": time.perf_counter() - start})


def _stated_mpp(scale: ScaleRequest | None) -> float | None:
    """The stated microns per pixel (checked against the plausible range), ``None`` for ``auto``."""
    if scale is None or scale.mode == "auto":
        return None
    if scale.mode != "microns_per_pixel" or scale.microns_per_pixel is None:
        raise SlideError(f"A slide is read at the model's physical scale: state its microns per pixel "
                         f"(e.g. 0.25 or 40x) or auto, not {scale.mode!r}.")
    return check_mpp(scale.microns_per_pixel, "The stated scale")


def _slide_stains(fields: SlideFields, model: SlideModel) -> StainEstimate | None:
    """The slide's one stain estimate, from ``STAIN_FIELDS`` tissue fields spread over it (richest
    tissue first would favour one region's staining; an even spread sees the whole slide)."""
    if model.spec.stain is None or not len(fields):
        return None
    rows = np.unique(np.linspace(0, len(fields) - 1, num=min(STAIN_FIELDS, len(fields))).round().astype(int))
    return estimate_stains(fields.read_rows(rows), model.spec.stain)


def _refused(reason: Refusal | None, model: SlideModel) -> Verdict:
    return Verdict(tuple(model.spec.class_ids), tuple(model.spec.names), None, reason)


def _slide_scale(override: float | None, metadata: float | None, metadata_source: str | None,
                 estimate: float | None, note: str, crops: int) -> SlideScale:
    if override is not None:
        return SlideScale(override, "override", "stated scale" + note, estimate)
    if metadata is not None:
        return SlideScale(metadata, "metadata", str(metadata_source), estimate)
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
