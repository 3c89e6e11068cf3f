"""The one rule every path follows, as three stages: plan the fields, run the engine, conclude.

1. :func:`plan` (request -> :class:`FieldPlan`): decide the scale once (``imageclf.core.scale``:
   how large the image's nuclei are compared with training, or what the caller says). The image
   is resampled to the training scale; if it then spans at most ``TILING_FACTOR`` model inputs
   it is one field (resized whole to the input: the slightly-off scale costs less than cutting a
   tile-sized image into slivers); otherwise it is cut into input-sized fields, background
   skipped, at most ``spec.max_fields`` kept. A scale the refusal rule rejects ends here.
2. The caller runs an engine (``imageclf.core.engine.FieldEngine``) on ``plan.pixels``, in as
   many batches as it likes (a progress bar counts them); nothing calls back.
3. :func:`conclude` (plan + outputs -> :class:`imageclf.core.verdict.ImageAnalysis`): each
   field judged and the answers merged (mean of the answered fields), every refusal decided by
   ``imageclf.core.refusal``.

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
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from imageclf.core import refusal
from imageclf.core.colour import tissue_mask
from imageclf.core.engine import FieldEngine, FieldOutputs
from imageclf.core.fields import TILING_FACTOR, TileAnalysis, cut_fields, field_pixels
from imageclf.core.imaging import to_model_input
from imageclf.core.refusal import Refusal
from imageclf.core.request import Request
from imageclf.core.scale import ScaleDecision, decide_scale
from imageclf.core.spec import ClassifierSpec
from imageclf.core.verdict import ImageAnalysis

# Fields per forward pass. The engine alone is a little faster at 32 (scripts/perf/batch_sizes.py),
# but a whole slide is faster end to end at 64: reading the next fields overlaps a longer pass
# (41.3 against 38.1 fields/s, scripts/perf/slide_bench.py; docs/operations.md).
CHUNK = 64

__all__ = ["CHUNK", "FieldPlan", "analyze", "conclude", "plan"]


@dataclass(frozen=True, eq=False)
class FieldPlan:
    """What the model will be asked: the scale decided, the fields cut, or a refusal already made."""

    scale: ScaleDecision
    view: np.ndarray | None = None           # the image at the model's scale (None: refused before)
    fields: TileAnalysis | None = None
    picked: tuple[int, ...] = ()             # indices into fields.tiles of the fields to classify
    pixels: np.ndarray | None = None         # their pixels: N x H x W x 3 uint8
    one_field: bool = False
    refusal: Refusal | None = None           # decided before any model call
    scale_refusal: Refusal | None = None

    def batches(self, size: int = CHUNK) -> Iterator[np.ndarray]:
        """The picked fields' pixels, ``size`` at a time (nothing for a refused plan)."""
        if self.pixels is None:
            return
        for start in range(0, len(self.pixels), size):
            yield self.pixels[start:start + size]


def plan(request: Request, spec: ClassifierSpec) -> FieldPlan:
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
        return FieldPlan(decision, refusal=colour or scale_refusal, scale_refusal=scale_refusal)
    height, width = rgb.shape[:2]
    scaled = (max(1, round(height * decision.factor)), max(1, round(width * decision.factor)))
    if max(scaled[0] / size[0], scaled[1] / size[1]) <= TILING_FACTOR:
        shown_as = max(size[0] / height, size[1] / width) / decision.factor  # >1: cells shown larger
        size_refusal = None if decision.mode == "native" else refusal.judge_field_size(shown_as, rule)
        if size_refusal is not None:
            return FieldPlan(decision, refusal=size_refusal)
        return _fields(to_model_input(rgb, size=size), decision, spec, one=True)
    interpolation = cv2.INTER_AREA if decision.factor < 1 else cv2.INTER_CUBIC
    view = rgb if scaled == (height, width) else cv2.resize(rgb, scaled[::-1], interpolation=interpolation)
    if view.shape[0] < size[0] or view.shape[1] < size[1]:   # a long thin strip: pad with blank glass
        padded = np.full((max(view.shape[0], size[0]), max(view.shape[1], size[1]), 3), 255, np.uint8)
        padded[:view.shape[0], :view.shape[1]] = view
        view = padded
    return _fields(view, decision, spec, one=False)


def conclude(field_plan: FieldPlan, outputs: FieldOutputs | None, spec: ClassifierSpec) -> ImageAnalysis:
    """Stage 3: judge each classified field, merge, and decide the image's verdict."""
    common = dict(class_ids=tuple(spec.class_ids), names=tuple(spec.names), scale_refusal=field_plan.scale_refusal)
    if field_plan.fields is None:
        return ImageAnalysis(field_plan.scale, None, None, probabilities=None, refusal=field_plan.refusal, **common)
    if outputs is None or len(outputs) != len(field_plan.picked):
        raise ValueError(f"The engine answered {0 if outputs is None else len(outputs)} fields; "
                         f"{len(field_plan.picked)} were asked.")
    reasons = refusal.judge_fields(field_plan.pixels, outputs.probabilities, outputs.feature_scores, spec.refusal)
    tiles = list(field_plan.fields.tiles)
    for index, probabilities, reason in zip(field_plan.picked, outputs.probabilities, reasons, strict=True):
        tiles[index] = dataclasses.replace(tiles[index], status="classified", reason=reason,
                                           class_index=int(np.argmax(probabilities)),
                                           probabilities=tuple(float(p) for p in probabilities))
    fields = dataclasses.replace(field_plan.fields, tiles=tuple(tiles))
    answered = [row for row, reason in zip(outputs.probabilities, reasons, strict=True) if reason is None]
    mean = np.mean(answered, axis=0) if answered else None
    verdict = refusal.judge_image(reasons, mean, one_field=field_plan.one_field, rule=spec.refusal)
    if field_plan.one_field and verdict is not None and reasons:   # the field's own numbers, kept (not shown)
        mean = np.asarray(outputs.probabilities[0], np.float64)
    elif verdict is not None and verdict.reason is not refusal.Reason.FIELDS_DISAGREE:
        mean = None
    return ImageAnalysis(field_plan.scale, fields, field_plan.view, probabilities=mean, refusal=verdict, **common)


def analyze(request: Request, spec: ClassifierSpec, engine: FieldEngine, *, chunk: int = CHUNK) -> ImageAnalysis:
    """Answer for one whole image (any size): :func:`plan`, the engine on each batch, :func:`conclude`."""
    field_plan = plan(request, spec)
    if field_plan.fields is None:
        return conclude(field_plan, None, spec)
    outputs = [engine.run(batch) for batch in field_plan.batches(chunk)]
    return conclude(field_plan, FieldOutputs.concat(outputs, classes=len(spec.class_ids)), spec)


def _fields(view: np.ndarray, decision: ScaleDecision, spec: ClassifierSpec, *, one: bool) -> FieldPlan:
    rule = spec.refusal
    fields, picked = cut_fields(view, size=tuple(spec.input_size), class_ids=spec.class_ids,
                                background=rule.abstain.colour, min_tissue=0.0 if one else rule.min_tissue,
                                max_fields=spec.max_fields)
    return FieldPlan(decision, view=view, fields=fields, picked=tuple(picked),
                     pixels=field_pixels(view, fields, picked), one_field=one)
