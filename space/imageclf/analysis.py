"""The one rule every path follows: scale, fields, verdict. Same bytes in, same answer out.

1. **Scale** (``space/imageclf/scale.py``): how large the image's nuclei are compared with training
   (``auto``), or what the caller says (``native``, microns per pixel).
2. **Fields**: the image is resampled to the training scale. If it then spans at most
   ``ONE_FIELD_SPAN`` model inputs it is one field (resized whole to the input: the
   slightly-off scale costs less than cutting a tile-sized image into slivers); otherwise it is
   cut into input-sized fields, background skipped, at most ``MAX_FIELDS`` classified.
3. **Verdict**: probabilities averaged over the answered tissue fields. No answer (abstain)
   when the scale is unknown or out of range, when no tissue is found, when at least half
   the tissue fields abstain, or when the averaged top class is below the confidence floor.

The UI, ``/predict``, ``/predict_batch``, ``/predict_tiles``, the MCP tools and
``scripts/predict_client.py`` all call :func:`analyze_image`; ``tests/test_one_rule.py`` fails
if any of them answers differently.

Example:
    >>> result = analyze_image(rgb, predictor, scale="auto")
    >>> result.label, result.scale.factor, result.fields.classified
    ('lung_aca', 0.29, 1)
    >>> result.to_json()["abstained"]
    False
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from imageclf import ood, tiling
from imageclf.imaging import to_model_input, to_rgb_uint8
from imageclf.scale import ScaleDecision, ScaleRequest, decide_scale, parse_scale
from imageclf.settings import SETTINGS

ONE_FIELD_SPAN = tiling.TILING_FACTOR   # after rescaling, up to 2 inputs wide is still one field
MAX_MISMATCH = 3.0    # one field shown at > 3x (or < 1/3x) its estimated scale: refuse, don't guess
MAX_FIELDS = SETTINGS.max_fields   # bounds the time per image (~2 s on 2 cores); imageclf/settings.py
ABSTAIN_SHARE = 0.5   # at least this share of tissue fields abstaining: the image abstains

__all__ = ["ImageAnalysis", "analyze_image", "MAX_FIELDS"]

Classify = Callable[[Sequence[np.ndarray]], list[dict[str, Any]]]


@dataclass
class ImageAnalysis:
    """One image's answer: what was decided about scale, the fields, and the verdict."""

    scale: ScaleDecision
    fields: tiling.TileAnalysis | None       # None when the scale ruled the image out
    view: np.ndarray | None                  # the image the fields were cut from (for the map)
    class_ids: list[str]
    names: list[str]
    probabilities: np.ndarray | None         # averaged over answered fields (None: nothing answered)
    abstained: bool
    abstain_reason: str | None

    @property
    def top(self) -> int | None:
        return None if self.abstained or self.probabilities is None else int(np.argmax(self.probabilities))

    @property
    def label(self) -> str | None:
        return None if self.top is None else self.class_ids[self.top]

    @property
    def name(self) -> str | None:
        return None if self.top is None else self.names[self.top]

    @property
    def confidence(self) -> float | None:
        return None if self.top is None else float(self.probabilities[self.top])

    @property
    def confidences(self) -> dict[str, float] | None:
        """{class name: p} for ``gr.Label``; ``None`` when the image abstains (no class is named)."""
        if self.top is None:
            return None
        return {name: float(p) for name, p in zip(self.names, self.probabilities, strict=True)}

    @property
    def one_field(self) -> bool:
        return self.fields is not None and len(self.fields.tiles) == 1

    @property
    def model_input(self) -> np.ndarray | None:
        """The single field, when the image is one (for Grad-CAM): then ``view`` is exactly the model input."""
        return self.view if self.one_field else None

    def to_json(self) -> dict[str, Any]:
        """The result every client gets. When abstaining, no class name or class probability."""
        answered = self.top is not None
        return {
            "label": self.label, "name": self.name, "confidence": self.confidence,
            "probabilities": ({cid: float(p) for cid, p in zip(self.class_ids, self.probabilities, strict=True)}
                              if answered else None),
            "abstained": self.abstained, "abstain_reason": self.abstain_reason,
            "scale": self.scale.to_dict(), "fields": self.fields_json(),
        }

    def fields_json(self) -> dict[str, Any] | None:
        if self.fields is None:
            return None
        summary = self.fields.to_dict()
        summary["resampled_size"] = list(self.view.shape[:2][::-1]) if self.view is not None else None
        summary["abstained_share"] = summary.pop("abstained_fraction")
        if self.abstained:   # per-class tile counts would name classes the image does not answer
            summary.pop("counts")
            summary.pop("fractions")
        return summary


def analyze_image(rgb: np.ndarray, predictor: Any, *, scale: str | ScaleRequest | None = "auto",
                  classify_one: Classify | None = None, max_fields: int = MAX_FIELDS,
                  progress: Callable[[int, int], None] | None = None) -> ImageAnalysis:
    """Answer for one whole image (any size) by the shared rule above.

    ``predictor`` is a ``space/predictor.Predictor``. ``classify_one``: how to classify a single
    field (the Space passes its batching runner); several fields always go through
    ``predictor.predict_batch``. Raises ``scale.ScaleError`` for an unusable ``scale`` option.
    """
    rgb = to_rgb_uint8(rgb)
    request = scale if isinstance(scale, ScaleRequest) else parse_scale(scale)
    config = predictor.model_config
    size = tuple(predictor.input_size)
    common = dict(class_ids=list(predictor.class_ids), names=list(predictor.names))
    if config.input_unit != "tile":   # a CT slice or skin photo: always the whole image
        decision = ScaleDecision("native", 1.0, "whole image: this model takes whole images")
        return _classify_fields(to_model_input(rgb, size=size), predictor, decision, one=True,
                                classify_one=classify_one, max_fields=max_fields, progress=progress, **common)
    decision = decide_scale(rgb, config.scale, request, tissue=lambda: tiling.tissue_mask(rgb, predictor.abstain_rule))
    if not decision.ok:
        # Not stained tissue at all says more than "no nuclei found": check the colours first.
        colour_fails = not ood.colour_ok(to_model_input(rgb, size=size), predictor.abstain_rule)
        return ImageAnalysis(decision, None, None, probabilities=None, abstained=True,
                             abstain_reason=ood.COLOUR_REASON if colour_fails else _sentence(decision.reason),
                             **common)
    height, width = rgb.shape[:2]
    scaled = (max(1, round(height * decision.factor)), max(1, round(width * decision.factor)))
    if max(scaled[0] / size[0], scaled[1] / size[1]) <= ONE_FIELD_SPAN:
        shown_as = max(size[0] / height, size[1] / width) / decision.factor  # >1: cells shown larger
        if decision.mode != "native" and not 1 / MAX_MISMATCH <= shown_as <= MAX_MISMATCH:
            reason = (f"the image covers too {'small' if shown_as > 1 else 'large'} an area for one field "
                      f"at the model's scale (cells would be shown {shown_as:.1f}x their training size)")
            return ImageAnalysis(decision, None, None, probabilities=None, abstained=True,
                                 abstain_reason=_sentence(reason), **common)
        return _classify_fields(to_model_input(rgb, size=size), predictor, decision, one=True,
                                classify_one=classify_one, max_fields=max_fields, progress=progress, **common)
    interpolation = cv2.INTER_AREA if decision.factor < 1 else cv2.INTER_CUBIC
    view = rgb if scaled == (height, width) else cv2.resize(rgb, scaled[::-1], interpolation=interpolation)
    if view.shape[0] < size[0] or view.shape[1] < size[1]:   # a long thin strip: pad with blank glass
        padded = np.full((max(view.shape[0], size[0]), max(view.shape[1], size[1]), 3), 255, np.uint8)
        padded[:view.shape[0], :view.shape[1]] = view
        view = padded
    return _classify_fields(view, predictor, decision, one=False, classify_one=classify_one,
                            max_fields=max_fields, progress=progress, **common)


def _classify_fields(view: np.ndarray, predictor: Any, decision: ScaleDecision, *, one: bool,
                     classify_one: Classify | None, max_fields: int,
                     progress: Callable[[int, int], None] | None, class_ids: list[str],
                     names: list[str]) -> ImageAnalysis:
    classify = classify_one if one and classify_one is not None else predictor.predict_batch
    fields = tiling.classify_tiles(view, predictor, min_tissue=0.0 if one else None,
                                   max_tiles=max_fields, classify=classify, progress=progress)
    answered = [t for t in fields.tiles if t.status == "classified" and not t.abstained]
    classified = fields.classified
    common = dict(class_ids=class_ids, names=names)
    if classified == 0:
        return ImageAnalysis(decision, fields, view, probabilities=None, abstained=True,
                             abstain_reason="No tissue found: every field looks like background (blank or black).",
                             **common)
    if one and not answered:
        tile = fields.tiles[0]
        return ImageAnalysis(decision, fields, view, probabilities=np.asarray(tile.probabilities), abstained=True,
                             abstain_reason=tile.abstain_reason, **common)
    if not answered or fields.abstained / classified >= ABSTAIN_SHARE:
        reasons = [t.abstain_reason for t in fields.tiles if t.abstained and t.abstain_reason]
        common_reason = max(set(reasons), key=reasons.count) if reasons else None
        reason = (f"{fields.abstained} of {classified} tissue fields were not recognised"
                  + (f" (most often: {common_reason.rstrip('.')})" if common_reason else "") + ".")
        return ImageAnalysis(decision, fields, view, probabilities=None, abstained=True,
                             abstain_reason=reason, **common)
    mean = np.mean([t.probabilities for t in answered], axis=0)
    if not ood.confidence_ok(mean, predictor.abstain_rule):
        return ImageAnalysis(decision, fields, view, probabilities=mean, abstained=True,
                             abstain_reason=(f"The {len(answered)} tissue fields disagree: no class reaches "
                                             "the model's confidence floor on average."), **common)
    return ImageAnalysis(decision, fields, view, probabilities=mean, abstained=False, abstain_reason=None, **common)


def _sentence(text: str | None) -> str:
    text = (text or "the model abstained").strip()
    return text[0].upper() + text[1:].rstrip(".") + "."
