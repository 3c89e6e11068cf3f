"""The field engine: a batch of model-scale fields in, arrays out. Nothing else.

The rule (``imageclf.core.rule``) cuts fields and merges answers; an engine only runs the model.
It never calls back into its caller and decides nothing: thresholds and refusals are the
refusal rule's (``imageclf.core.refusal``). Keras serves today (``imageclf.model.keras_engine``);
the Space wraps it to batch concurrent requests; an optimised runtime or a slide reader's
worker plugs in behind the same :class:`FieldEngine` Protocol.

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

__all__ = ["FieldEngine", "FieldOutputs"]


@dataclass(frozen=True, eq=False)
class FieldOutputs:
    """What the model says about N fields: class probabilities (N x C, float64) and the
    feature check's distance per field (N, float64; ``None`` for a model without one)."""

    probabilities: np.ndarray
    feature_scores: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.probabilities)

    @classmethod
    def concat(cls, parts: Sequence[FieldOutputs], *, classes: int) -> FieldOutputs:
        """Several batches' outputs as one, in order (``classes``: C, for an empty list)."""
        if not parts:
            return cls(np.zeros((0, classes)), None)
        scores = [p.feature_scores for p in parts]
        return cls(np.concatenate([p.probabilities for p in parts]),
                   None if any(s is None for s in scores) else np.concatenate(scores))


@runtime_checkable
class FieldEngine(Protocol):
    """Runs the model on a batch of fields: N x H x W x 3 RGB uint8 at the model's input size."""

    def run(self, fields: np.ndarray) -> FieldOutputs: ...
