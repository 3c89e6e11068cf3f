"""The precision rule's measured unit: N fields as a runtime served them, and one stress row's pairs.

Shared by ``precision_measure`` (which makes them) and ``precision_rule`` (which judges them), so that
neither imports the other: the rule stays pure statistics, the measurement stays a run.

Example:
    >>> keras = Decisions(probs, probs.argmax(1), refused)
    >>> stress_row("nonlung-colon", bf16, keras)["refused_to_answered"]
    1
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ECE_BINS = 15           # clause 2's bins (top label), the same as the calibration module's

__all__ = ["ECE_BINS", "Decisions", "stress_row"]


@dataclass(frozen=True, eq=False)
class Decisions:
    """N fields as served: probabilities (N x C float64), label (argmax) and refused (bool) per field."""

    probabilities: np.ndarray
    label: np.ndarray
    refused: np.ndarray


def stress_row(name: str, candidate: Decisions, reference: Decisions) -> dict:
    """One stress row's paired refusals: b = Keras refused, candidate answered; c = the reverse."""
    return {"set": name, "n": int(len(candidate.label)),
            "refused_to_answered": int((reference.refused & ~candidate.refused).sum()),
            "answered_to_refused": int((~reference.refused & candidate.refused).sum()),
            "label_changed": int((candidate.label != reference.label).sum()),
            "refused_keras": float(reference.refused.mean()), "refused": float(candidate.refused.mean())}
