"""An image's plan and conclusion around the one field loop: plan the fields, run them, conclude.

1. :func:`plan` (request -> :class:`ImagePlan`): decide the scale once (``imageclf.core.scale``:
   how large the image's nuclei are compared with training, or what the caller says). The image
   is resampled to the training scale; if it then spans at most ``TILING_FACTOR`` model inputs
   it is one field (resized whole to the input: the slightly-off scale costs less than cutting a
   tile-sized image into slivers); otherwise it is cut into input-sized fields, background
   skipped, at most ``spec.max_fields`` kept. The image's stains are estimated once, from those
   fields (``imageclf.core.stain``), for a model with a stain block. A scale the refusal rule
   rejects ends here.
2. ``imageclf.core.pipeline.run`` on ``image_plan.fields``: the one field loop a slide runs too.
3. :func:`conclude` (plan + field table -> :class:`imageclf.core.verdict.ImageAnalysis`): the
   verdict by ``imageclf.core.pipeline.merge``, the field grid filled in.

:func:`analyze` is the three in a row. The UI, ``/predict``, ``/predict_batch``,
``/predict_tiles``, the MCP tools and ``scripts/predict_client.py`` all answer through it
(``tests/test_one_rule.py`` fails if any of them answers differently).

Example:
    >>> request = Request(decode_image("lungaca1.jpeg"), parse_scale("auto", spec.scale))
    >>> result = analyze(request, spec, engine)
    >>> result.label, result.scale.factor, result.fields.classified
    ('lung_aca', 0.29, 1)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

from imageclf.core import pipeline, refusal
from imageclf.core.colour import tissue_mask
from imageclf.core.engine import FieldEngine
from imageclf.core.field_table import FieldTable
from imageclf.core.fields import TILING_FACTOR, FieldGrid, cut_fields, field_pixels
from imageclf.core.imaging import to_model_input
from imageclf.core.refusal import Refusal
from imageclf.core.request import Request
from imageclf.core.scale import ScaleDecision, decide_scale
from imageclf.core.spec import ClassifierSpec
from imageclf.core.stain import StainEstimate, estimate_stains
from imageclf.core.verdict import ImageAnalysis, Verdict

__all__ = ["ImagePlan", "analyze", "conclude", "plan"]


@dataclass(frozen=True, eq=False)
class ImagePlan:
    """What the model will be asked about one image: the scale decided, the grid cut and the fields to
    run (``fields``, for the loop), or a refusal already made (then ``fields`` is None)."""

    scale: ScaleDecision
    view: np.ndarray | None = None           # the image at the model's scale (None: refused before)
    grid: FieldGrid | None = None
    picked: tuple[int, ...] = ()             # indices into grid.cells of the fields to classify
    fields: pipeline.FieldPlan | None = None
    one_field: bool = False
    refusal: Refusal | None = None           # decided before any model call
    scale_refusal: Refusal | None = None
    stain: StainEstimate | None = None


def plan(request: Request, spec: ClassifierSpec) -> ImagePlan:
    """Stage 1: the scale, then the fields (or the refusal that makes fields pointless)."""
    rgb, size, rule = request.pixels, tuple(spec.input_size), spec.refusal
    if spec.input_unit != "tile":   # a CT slice or skin photo: always the whole image
        decision = ScaleDecision("native", 1.0, "whole image: this model takes whole images")
        return _fields(to_model_input(rgb, size=size), decision, spec, one=True)
    decision = decide_scale(rgb, spec.scale, request.scale, tissue=lambda: tissue_mask(rgb, rule.abstain.colour))
    scale_refusal = refusal.judge_scale(decision, spec.scale)
    if scale_refusal is not None:
        # Not stained tissue at all says more than "no nuclei found": the colour check comes first.
        colour = refusal.colour_refusal(to_model_input(rgb, size=size), rule)
        return ImagePlan(decision, refusal=colour or scale_refusal, scale_refusal=scale_refusal)
    height, width = rgb.shape[:2]
    scaled = (max(1, round(height * decision.factor)), max(1, round(width * decision.factor)))
    if max(scaled[0] / size[0], scaled[1] / size[1]) <= TILING_FACTOR:
        shown_as = max(size[0] / height, size[1] / width) / decision.factor  # >1: cells shown larger
        size_refusal = None if decision.mode == "native" else refusal.judge_field_size(shown_as, rule)
        if size_refusal is not None:
            return ImagePlan(decision, refusal=size_refusal)
        return _fields(to_model_input(rgb, size=size), decision, spec, one=True)
    interpolation = cv2.INTER_AREA if decision.factor < 1 else cv2.INTER_CUBIC
    view = rgb if scaled == (height, width) else cv2.resize(rgb, scaled[::-1], interpolation=interpolation)
    if view.shape[0] < size[0] or view.shape[1] < size[1]:   # a long thin strip: pad with blank glass
        padded = np.full((max(view.shape[0], size[0]), max(view.shape[1], size[1]), 3), 255, np.uint8)
        padded[:view.shape[0], :view.shape[1]] = view
        view = padded
    return _fields(view, decision, spec, one=False)


def conclude(image_plan: ImagePlan, table: FieldTable | None, spec: ClassifierSpec) -> ImageAnalysis:
    """Stage 3: the verdict from the field table (``pipeline.merge``), and the grid filled in."""
    common = dict(scale_refusal=image_plan.scale_refusal, stain=image_plan.stain)
    if image_plan.fields is None or image_plan.grid is None:
        verdict = Verdict(tuple(spec.class_ids), tuple(spec.names), None, image_plan.refusal)
        return ImageAnalysis(image_plan.scale, image_plan.grid, image_plan.view, verdict, **common)
    if table is None or len(table) != len(image_plan.picked):
        raise ValueError(f"The engine answered {0 if table is None else len(table)} fields; "
                         f"{len(image_plan.picked)} were asked.")
    tiles = list(image_plan.grid.cells)
    for index, probabilities, reason in zip(image_plan.picked, table.probabilities, table.reasons, strict=True):
        tiles[index] = dataclasses.replace(tiles[index], status="classified", reason=reason,
                                           class_index=int(np.argmax(probabilities)),
                                           probabilities=tuple(float(p) for p in probabilities))
    grid = dataclasses.replace(image_plan.grid, cells=tuple(tiles))
    verdict = pipeline.merge(table, spec, one_field=image_plan.one_field)
    return ImageAnalysis(image_plan.scale, grid, image_plan.view, verdict, **common)


def analyze(request: Request, spec: ClassifierSpec, engine: FieldEngine, *, batch: int = pipeline.CHUNK,
            progress: pipeline.Progress | None = None) -> ImageAnalysis:
    """Answer for one whole image (any size): :func:`plan`, the field loop, :func:`conclude`.

    An image that is one field at its own scale (a tile, the common API call) is most likely one field
    whatever its scale turns out to be, and that field is the whole image resized to the input: its
    forward pass starts before the plan (``pipeline.early_pass``) and is used if the plan ends with
    that very field. Not for a model with a stain block: its fields are mapped with the stains the
    plan estimates.
    """
    size = tuple(spec.input_size)
    height, width = request.pixels.shape[:2]
    if spec.stain is None and (spec.input_unit != "tile" or max(height / size[0], width / size[1]) <= TILING_FACTOR):
        engine = pipeline.early_pass(engine, to_model_input(request.pixels, size=size)[None])
    image_plan = plan(request, spec)
    if image_plan.fields is None:
        return conclude(image_plan, None, spec)
    return conclude(image_plan, pipeline.run(image_plan.fields, engine, spec, batch=batch, progress=progress), spec)


def _fields(view: np.ndarray, decision: ScaleDecision, spec: ClassifierSpec, *, one: bool) -> ImagePlan:
    rule = spec.refusal
    grid, picked = cut_fields(view, size=tuple(spec.input_size), class_ids=spec.class_ids,
                              background=rule.abstain.colour, min_tissue=0.0 if one else rule.min_tissue,
                              max_fields=spec.max_fields)
    pixels = field_pixels(view, grid, picked)
    height, width = grid.tile_size
    tiles = [grid.cells[i] for i in picked]
    boxes = np.array([[t.x, t.y, width, height] for t in tiles], np.int64).reshape(-1, 4)
    estimate = None if spec.stain is None or not len(pixels) else estimate_stains(pixels, spec.stain)
    stain_refusal = refusal.judge_stain(estimate, spec.stain)
    if stain_refusal is not None:
        return ImagePlan(decision, view=view, grid=grid, refusal=stain_refusal, stain=estimate)
    fields = pipeline.FieldPlan(pipeline.ArrayFields(pixels), boxes, np.array([t.tissue for t in tiles]),
                                stain=estimate)
    return ImagePlan(decision, view=view, grid=grid, picked=tuple(picked), fields=fields, one_field=one,
                     stain=estimate)
