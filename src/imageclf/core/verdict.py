"""One image's answer: the scale decision, the fields, and the verdict or the refusal.

Made by the rule (``imageclf.core.rule.conclude``); presented by the Space (panels, JSON), the
command-line client and the evaluation code. :meth:`ImageAnalysis.to_json` is the result every
client gets; when there is no answer it names no class and no class probability.

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

from imageclf.core.fields import TileAnalysis
from imageclf.core.refusal import Refusal
from imageclf.core.scale import ScaleDecision

__all__ = ["ImageAnalysis"]


@dataclass(frozen=True, eq=False)
class ImageAnalysis:
    """The verdict for one image. ``refusal`` set: no answer; ``scale_refusal``: the scale's own
    refusal (reported in the scale block even when the colour check says more)."""

    scale: ScaleDecision
    fields: TileAnalysis | None              # None when the image was refused before any field was cut
    view: np.ndarray | None                  # the image the fields were cut from (for the map)
    class_ids: tuple[str, ...]
    names: tuple[str, ...]
    probabilities: np.ndarray | None         # averaged over answered fields (None: nothing answered)
    refusal: Refusal | None = None
    scale_refusal: Refusal | None = None

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
            "abstained": self.abstained, "abstain_reason": self.abstain_reason, "abstain_code": self.abstain_code,
            "scale": self.scale.to_dict(self.scale_refusal), "fields": self.fields_json(),
        }

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
