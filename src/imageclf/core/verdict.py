"""One verdict type and its one JSON writer, and an image's answer around it.

:class:`Verdict` (made by ``imageclf.core.pipeline.merge``) is the answer of an image, a slide or a
tile: class probabilities or a refusal; :meth:`Verdict.to_json` is the one place its JSON is written
(no class name and no class probability when there is no answer). :class:`ImageAnalysis` adds what
an image has beside it (the scale decision, the field grid, the resampled view, the stain
estimate); a slide's ``SlideResult`` holds the same :class:`Verdict`.

Example:
    >>> analysis.label, analysis.confidence, analysis.abstain_code
    ('lung_aca', 0.97, None)
    >>> analysis.to_json()["scale"]["factor"]
    0.29
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from imageclf.core.fields import FieldGrid
from imageclf.core.refusal import Refusal
from imageclf.core.scale import ScaleDecision
from imageclf.core.stain import StainEstimate

__all__ = ["ImageAnalysis", "Verdict"]


@dataclass(frozen=True, eq=False)
class Verdict:
    """Class probabilities (averaged over answered fields; ``None``: nothing answered) or a refusal.
    ``refusal`` set: no answer, and no class is named."""

    class_ids: tuple[str, ...]
    names: tuple[str, ...]
    probabilities: np.ndarray | None
    refusal: Refusal | None = None

    @property
    def abstained(self) -> bool:
        return self.refusal is not None

    @property
    def abstain_reason(self) -> str | None:
        return None if self.refusal is None else self.refusal.sentence

    @property
    def abstain_code(self) -> str | None:
        return None if self.refusal is None else self.refusal.code

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

    def to_json(self) -> dict[str, Any]:
        """``label`` (class id), ``name`` (class name), ``confidence``, ``probabilities`` (class id to p),
        ``abstained``, ``abstain_reason``, ``abstain_code``: no class named when abstaining."""
        answered = self.top is not None
        return {
            "label": self.label, "name": self.name, "confidence": self.confidence,
            "probabilities": ({cid: float(p) for cid, p in zip(self.class_ids, self.probabilities, strict=True)}
                              if answered else None),
            "abstained": self.abstained, "abstain_reason": self.abstain_reason, "abstain_code": self.abstain_code,
        }


@dataclass(frozen=True, eq=False)
class ImageAnalysis:
    """One image's answer: its :class:`Verdict` with the scale decision, the field grid and the view.
    ``scale_refusal``: the scale's own refusal (reported in the scale block even when the colour
    check says more); ``stain``: the image's stain estimate (``None``: the model normalises nothing)."""

    scale: ScaleDecision
    fields: FieldGrid | None              # None when the image was refused before any field was cut
    view: np.ndarray | None                  # the image the fields were cut from (for the map)
    verdict: Verdict
    scale_refusal: Refusal | None = None
    stain: StainEstimate | None = None

    # The verdict's facts, read here by every presenter of an image.
    class_ids = property(lambda self: self.verdict.class_ids)
    names = property(lambda self: self.verdict.names)
    probabilities = property(lambda self: self.verdict.probabilities)
    refusal = property(lambda self: self.verdict.refusal)
    abstained = property(lambda self: self.verdict.abstained)
    abstain_reason = property(lambda self: self.verdict.abstain_reason)
    abstain_code = property(lambda self: self.verdict.abstain_code)
    top = property(lambda self: self.verdict.top)
    label = property(lambda self: self.verdict.label)
    name = property(lambda self: self.verdict.name)
    confidence = property(lambda self: self.verdict.confidence)
    confidences = property(lambda self: self.verdict.confidences)

    @property
    def one_field(self) -> bool:
        return self.fields is not None and len(self.fields.cells) == 1

    @property
    def model_input(self) -> np.ndarray | None:
        """The single field, when the image is one (for Grad-CAM): then ``view`` is exactly the model
        input as sent (the original colours: Grad-CAM and the page show what the user sent)."""
        return self.view if self.one_field else None

    def to_json(self) -> dict[str, Any]:
        """The result every client gets: the verdict, the scale, the fields (and the stain step, for a
        model that normalises)."""
        data = {**self.verdict.to_json(), "scale": self.scale.to_dict(
            refused=None if self.scale_refusal is None else self.scale_refusal.phrase), "fields": self.fields_json()}
        if self.stain is not None:
            data["stain_normalisation"] = self.stain.to_dict()
        return data

    def fields_json(self) -> dict[str, Any] | None:
        if self.fields is None:
            return None
        summary = self.fields.to_dict()
        summary["resampled_size"] = list(self.view.shape[:2][::-1]) if self.view is not None else None
        summary["abstained_share"] = summary.pop("abstained_fraction")
        if self.abstained:   # per-class field counts would name classes the image does not answer
            summary.pop("counts")
            summary.pop("fractions")
        return summary
