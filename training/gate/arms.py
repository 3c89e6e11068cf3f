"""The checks the tissue-gate arms are made of, in numpy (plus scikit-learn for fitting the gate).

- :class:`MahalanobisCheck`: the served feature check (PCA Mahalanobis, min over classes, on
  unit-length pooled features; ``training.calibration.feature_ood``), fitted on whatever features
  it is given: clean train features, or clean plus lab-shifted ones (arm 2).
- :class:`LogisticGate`: lung vs not-lung on unit-length features (arm 3). Its score is P(not lung),
  computed by the served gate's own math (``imageclf.model.tissue_gate.gate_scores``); its arrays are
  the served file (``training/gate/gate_export.py``).
- :func:`recentre`: each field's unit feature minus its image's mean plus the training mean (arm 4).
- :func:`threshold_at`: a quantile of clean VALIDATION scores (never test, never external).
- :func:`reasons`: the served per-field order: colour check, then the arm's check, then the
  confidence floor (``imageclf.core.refusal.judge_field``), as one code per field.

Example:
    >>> check = MahalanobisCheck.fit(train_x, train_y).with_threshold(val_x, quantile=0.995)
    >>> gate = LogisticGate.fit(lung_x, not_lung_x).with_threshold(val_x, quantile=0.995)
    >>> refused = check.refuses(x) | gate.refuses(x)
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from sklearn.linear_model import LogisticRegression

from imageclf.errors import ModelError
from imageclf.model.feature_check import normalise, score
from imageclf.model.tissue_gate import TissueGateError, gate_scores
from training.calibration.feature_ood import fit as fit_mahalanobis

QUANTILE = 0.995        # each check refuses about 0.5% of clean validation tiles (the served convention)
CODES = ("", "colour", "feature", "confidence")


class GateError(ModelError, ValueError):
    """Inputs an arm cannot be fitted or applied on (empty sides, mismatched widths, no threshold)."""


def threshold_at(val_scores: np.ndarray, quantile: float = QUANTILE) -> float:
    """The ``quantile`` of clean validation scores: about ``1 - quantile`` of in-distribution tiles exceed it."""
    val_scores = np.asarray(val_scores, np.float64)
    if not len(val_scores):
        raise GateError("No validation scores to set a threshold on.")
    return float(np.quantile(val_scores, quantile))


@dataclass(frozen=True)
class MahalanobisCheck:
    """PCA Mahalanobis distance to the nearest class mean; refuses above ``threshold``."""

    params: dict
    threshold: float = np.inf

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, *, dims: int = 256, shrinkage: float = 0.1) -> MahalanobisCheck:
        try:
            return cls(fit_mahalanobis(features, labels, dims=min(dims, len(features) - 2), shrinkage=shrinkage))
        except ValueError as err:
            raise GateError(str(err)) from None

    @classmethod
    def served(cls, params: dict, threshold: float) -> MahalanobisCheck:
        return cls(dict(params), float(threshold))

    def scores(self, features: np.ndarray) -> np.ndarray:
        return score(features, self.params)

    def with_threshold(self, val_features: np.ndarray, quantile: float = QUANTILE) -> MahalanobisCheck:
        return replace(self, threshold=threshold_at(self.scores(val_features), quantile))

    def refuses(self, features: np.ndarray) -> np.ndarray:
        return self.scores(features) > self.threshold


@dataclass(frozen=True)
class LogisticGate:
    """Logistic regression on standardised unit-length features; score = P(not lung)."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    threshold: float = np.inf

    @classmethod
    def fit(cls, lung: np.ndarray, not_lung: np.ndarray, *, c: float = 0.1, seed: int = 0) -> LogisticGate:
        """Fit with both sides weighted equally (``class_weight="balanced"``); ``c``: inverse L2 strength."""
        if not (len(lung) and len(not_lung)):
            raise GateError(f"A gate needs both sides: {len(lung)} lung, {len(not_lung)} not-lung features.")
        x = normalise(np.concatenate([lung, not_lung]))
        y = np.r_[np.zeros(len(lung)), np.ones(len(not_lung))]
        mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
        model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=seed)
        model.fit((x - mean) / scale, y)
        return cls(mean, scale, model.coef_[0].astype(np.float64), float(model.intercept_[0]))

    def params(self) -> dict[str, np.ndarray | float]:
        """The fitted numbers as :func:`~imageclf.model.tissue_gate.gate_scores` reads them (float64 here)."""
        return {"mean": self.mean, "scale": self.scale, "coef": self.coef, "intercept": self.intercept}

    def scores(self, features: np.ndarray) -> np.ndarray:
        """P(not lung) per row, by the served math (one copy: what is measured is what is served)."""
        try:
            return gate_scores(features, self.params())
        except TissueGateError as err:
            raise GateError(str(err)) from None

    def with_threshold(self, val_features: np.ndarray, quantile: float = QUANTILE) -> LogisticGate:
        """Threshold at the validation quantile, but never below 0.5 (a gate that calls a field
        more likely lung than not does not refuse it)."""
        return replace(self, threshold=max(0.5, threshold_at(self.scores(val_features), quantile)))

    def refuses(self, features: np.ndarray) -> np.ndarray:
        return self.scores(features) > self.threshold

    def arrays(self) -> dict[str, np.ndarray]:
        """Exactly what the served gate reads (``imageclf.model.tissue_gate.REQUIRED``; float32, no
        pickles): the fitted numbers and the threshold, which the loader checks against config.json's."""
        served = {**self.params(), "threshold": self.threshold}
        return {key: np.asarray(value, np.float32) for key, value in served.items()}


def recentre(features: np.ndarray, images: np.ndarray, train_mean: np.ndarray) -> np.ndarray:
    """Unit features re-centred on their image: x - mean(x of the same image) + ``train_mean``."""
    x = normalise(features)
    images = np.asarray(images)
    out = np.empty_like(x)
    for image in np.unique(images):
        rows = images == image
        out[rows] = x[rows] - x[rows].mean(axis=0) + train_mean
    return out


def pseudo_images(groups: np.ndarray, *, size: int = 9, seed: int = 0) -> np.ndarray:
    """Ids that gather single-tile images into pseudo-slides of ``size`` tiles sharing a ``groups`` key
    (class, set): re-centring needs several fields per image, and one LC25000 tile is one field."""
    groups = np.asarray(groups)
    rng = np.random.default_rng(seed)
    out = np.empty(len(groups), dtype=object)
    for key in np.unique(groups):
        rows = rng.permutation(np.flatnonzero(groups == key))
        for start in range(0, len(rows), size):
            out[rows[start:start + size]] = f"{key}#{start // size}"
    return out.astype(str)


def reasons(colour_ok: np.ndarray, check_refuses: np.ndarray, probabilities: np.ndarray,
            min_confidence: float) -> np.ndarray:
    """One code per field in the served order: 'colour', 'feature' (the arm's check), 'confidence' or ''."""
    colour_ok = np.asarray(colour_ok, bool)
    check_refuses = np.asarray(check_refuses, bool)
    low = np.max(probabilities, axis=1) < min_confidence
    if not (len(colour_ok) == len(check_refuses) == len(low)):
        raise GateError("colour, check and probabilities describe different numbers of fields.")
    return np.where(~colour_ok, "colour", np.where(check_refuses, "feature", np.where(low, "confidence", "")))
