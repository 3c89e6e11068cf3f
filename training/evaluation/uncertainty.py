"""How sure is a test accuracy? A bootstrap over original photographs, not over tiles.

The ~20 rotated/flipped copies of one LC25000 original are nearly always judged alike, so
tiles are not independent samples: resampling tiles would give a falsely narrow interval.
Resampling whole groups (originals) gives an honest one.

Example:
    >>> group_bootstrap_ci(correct=[1, 1, 0, 1], groups=["a", "a", "b", "c"])
    {'low': ..., 'high': ..., 'level': 0.95, 'groups': 3, 'resamples': 2000, 'method': ...}
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def group_bootstrap_ci(
    correct: Sequence[bool] | np.ndarray,
    groups: Sequence[str],
    *,
    level: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> dict:
    """Percentile bootstrap interval of the tile accuracy, resampling whole groups."""
    correct = np.asarray(correct, dtype=np.float64)
    if len(correct) != len(groups) or len(correct) == 0:
        raise ValueError("correct and groups must be non-empty and of equal length")
    names, index = np.unique(np.asarray(groups), return_inverse=True)
    hits = np.bincount(index, weights=correct)  # correct tiles per group
    sizes = np.bincount(index).astype(np.float64)  # tiles per group
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(names), size=(resamples, len(names)))
    accuracies = hits[draws].sum(1) / sizes[draws].sum(1)
    tail = (1 - level) / 2
    low, high = np.quantile(accuracies, [tail, 1 - tail])
    return {"low": round(float(low), 4), "high": round(float(high), 4), "level": level,
            "groups": int(len(names)), "resamples": resamples,
            "method": "percentile bootstrap over groups (original photographs), not tiles"}
