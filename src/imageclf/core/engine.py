"""The field engine: a batch of model-scale fields in, arrays out. Nothing else.

The rule (``imageclf.core.rule``) cuts fields and merges answers; an engine only runs the model.
It never calls back into its caller and decides nothing: thresholds and refusals are the
refusal rule's (``imageclf.core.refusal``). Keras serves today (``imageclf.model.keras_engine``);
the Space wraps it to batch concurrent requests; an optimised runtime or a slide reader's
worker plugs in behind the same :class:`FieldEngine` Protocol. A model's checks on the pooled
features (the feature check, the tissue gate) are scored from the same pass
(:meth:`FieldOutputs.from_pass`).

Example:
    >>> outputs = engine.run(np.zeros((2, 224, 224, 3), np.uint8))
    >>> outputs.probabilities.shape, outputs.feature_scores.shape
    ((2, 3), (2,))
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["FeatureScorer", "FieldEngine", "FieldOutputs"]


class FeatureScorer(Protocol):
    """A check that scores the pooled features of one pass (the feature check, the tissue gate)."""

    def scores(self, features: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True, eq=False)
class FieldOutputs:
    """What the model says about N fields: class probabilities (N x C, float64), the feature
    check's distance per field and the tissue gate's P(not lung) per field (N, float64 each;
    ``None`` for a model without that check)."""

    probabilities: np.ndarray
    feature_scores: np.ndarray | None = None
    gate_scores: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.probabilities)

    @classmethod
    def from_pass(cls, probabilities: np.ndarray, features: np.ndarray, feature_check: FeatureScorer | None,
                  tissue_gate: FeatureScorer | None) -> FieldOutputs:
        """One forward pass's two outputs (probabilities, pooled features) as field outputs: every
        check the model has scores the same features, so no check costs a second pass. Shared by
        the engines so that each fills the same fields the same way."""
        def scored(check: FeatureScorer | None) -> np.ndarray | None:
            return None if check is None else np.asarray(check.scores(features), dtype=np.float64)
        return cls(np.asarray(probabilities, dtype=np.float64), scored(feature_check), scored(tissue_gate))

    @classmethod
    def concat(cls, parts: Sequence[FieldOutputs], *, classes: int) -> FieldOutputs:
        """Several batches' outputs as one, in order (``classes``: C, for an empty list)."""
        if not parts:
            return cls(np.zeros((0, classes)), None)

        def joined(scores: list[np.ndarray | None]) -> np.ndarray | None:
            return None if any(s is None for s in scores) else np.concatenate(scores)
        return cls(np.concatenate([p.probabilities for p in parts]), joined([p.feature_scores for p in parts]),
                   joined([p.gate_scores for p in parts]))

    def split(self) -> list[FieldOutputs]:
        """One :class:`FieldOutputs` per field (the inverse of :meth:`concat`): what a wrapper that
        answers fields one by one (the Space's batching) hands back, so no per-field output is lost."""
        def row(scores: np.ndarray | None, i: int) -> np.ndarray | None:
            return None if scores is None else scores[i:i + 1]
        return [FieldOutputs(self.probabilities[i:i + 1], row(self.feature_scores, i), row(self.gate_scores, i))
                for i in range(len(self))]


@runtime_checkable
class FieldEngine(Protocol):
    """Runs the model on a batch of fields: N x H x W x 3 RGB uint8 at the model's input size."""

    def run(self, fields: np.ndarray) -> FieldOutputs: ...
