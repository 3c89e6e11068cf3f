"""The one field table every path returns: boxes, tissue share, probabilities and refusal reason per field.

Made by the field loop (``imageclf.core.pipeline.run``) for an image, a slide or a list of tiles;
read by the merge, the image's field grid, the slide writers (CSV, GeoJSON, heatmap) and the
evaluation code. Pure data.

Example:
    >>> table = run(plan, engine, spec)
    >>> table.boxes.shape, table.probabilities.shape, table.answered.sum()
    ((41, 4), (41, 3), 38)
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from imageclf.core.refusal import Reason

__all__ = ["FieldTable"]


@dataclass(frozen=True, eq=False)
class FieldTable:
    """N scored fields: boxes (N x 4: x, y, width, height, in the caller's pixels: the resampled
    image's, or a slide's level 0), tissue share, probabilities (N x C) and each field's refusal
    reason (``None``: answered); ``feature_scores``: the feature check's distance per field (``None``
    for a model without one); ``timings``: where the loop spent its time."""

    boxes: np.ndarray
    tissue: np.ndarray
    probabilities: np.ndarray
    reasons: tuple[Reason | None, ...]
    feature_scores: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls, classes: int) -> FieldTable:
        return cls(np.zeros((0, 4), np.int64), np.zeros(0), np.zeros((0, classes)), ())

    @property
    def top(self) -> np.ndarray:
        return np.argmax(self.probabilities, axis=1) if len(self) else np.zeros(0, np.int64)

    @property
    def answered(self) -> np.ndarray:
        return np.array([r is None for r in self.reasons], bool)

    def codes(self) -> list[str | None]:
        """Each field's refusal code (``None``: answered), as clients see it."""
        return [None if r is None else r.value for r in self.reasons]

    def rows(self, index: Sequence[int]) -> FieldTable:
        """The fields at ``index``, in that order."""
        index = np.asarray(index, int)
        return FieldTable(self.boxes[index], self.tissue[index], self.probabilities[index],
                          tuple(self.reasons[i] for i in index),
                          None if self.feature_scores is None else self.feature_scores[index])
