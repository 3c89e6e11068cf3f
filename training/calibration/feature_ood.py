"""Feature-space out-of-distribution score: is this image like the training tiles, to the backbone?

The colour check and the softmax confidence see only colour and the head's certainty; an
H&E-tinted photo or colon tissue passes both. The pooled DenseNet features (the model's
``features`` layer) separate them: we project onto the top principal components of the
training features and take the smallest class-conditional Mahalanobis distance under one
shared, shrunk covariance (Lee et al. 2018). A large distance means "unlike every class".

Everything serving needs is numpy: :func:`score` and :func:`load_params`. Fitting is numpy too.
The threshold is a quantile of VALIDATION scores, so it says how many in-distribution tiles are
refused (about ``1 - quantile``).

Example:
    >>> params = fit(train_features, train_labels, dims=128)
    >>> params["threshold"] = threshold_from(score(val_features, params), quantile=0.995)
    >>> save_params(params, "runs/densenet/ood", fitted_on="LC25000 lung train split")
    >>> refused = score(features, load_params("runs/densenet/ood")) > params["threshold"]
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# Scoring is serving code (one implementation, used by both): src/imageclf/model/feature_check.py.
from imageclf.model.feature_check import (METHOD, FeatureOODError, load_params as _load,  # noqa: F401 (re-exported)
                                  normalise, score)

FEATURE_LAYER = "features"
PARAMS_FILE, INFO_FILE = "feature_ood.npz", "feature_ood.json"


def fit(features: np.ndarray, labels: np.ndarray, *, dims: int = 128, shrinkage: float = 0.1) -> dict[str, np.ndarray]:
    """Fit the score on in-distribution training features (N, D) with integer class labels.

    Args:
        dims: principal components kept (fewer: smoother, less sensitive).
        shrinkage: covariance = (1 - s) * pooled within-class covariance + s * mean variance * I.

    Example:
        >>> params = fit(np.random.default_rng(0).normal(size=(300, 16)), np.arange(300) % 3, dims=8)
        >>> sorted(params)
        ['class_means', 'components', 'mean', 'precision', 'threshold']
    """
    x = normalise(features)
    labels = np.asarray(labels)
    if len(x) != len(labels) or len(x) < dims + 2:
        raise FeatureOODError(f"Need at least dims + 2 = {dims + 2} labelled features, got {len(x)}.")
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    components = vt[:dims].T  # (D, dims)
    z = (x - mean) @ components
    classes = np.unique(labels)
    class_means = np.stack([z[labels == c].mean(axis=0) for c in classes])
    centred = z - class_means[np.searchsorted(classes, labels)]
    covariance = centred.T @ centred / len(z)
    covariance = (1 - shrinkage) * covariance + shrinkage * np.trace(covariance) / dims * np.eye(dims)
    return {"mean": mean.astype(np.float32), "components": components.astype(np.float32),
            "class_means": class_means.astype(np.float32),
            "precision": np.linalg.inv(covariance).astype(np.float32),
            "threshold": np.array(np.inf, np.float32)}


def threshold_from(val_scores: np.ndarray, *, quantile: float = 0.995) -> float:
    """The ``quantile`` of validation scores: about ``1 - quantile`` of in-distribution tiles exceed it."""
    return float(np.quantile(np.asarray(val_scores, np.float64), quantile))


def save_params(params: dict, folder: str | Path, *, fitted_on: str, extra: dict | None = None) -> Path:
    """Write ``feature_ood.npz`` (float32 arrays only) and ``feature_ood.json`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.asarray(v, np.float32) for k, v in params.items()}
    np.savez(folder / PARAMS_FILE, **arrays)
    info = {"method": METHOD, "feature_layer": FEATURE_LAYER, "threshold": float(arrays["threshold"]),
            "fitted_on": fitted_on, "dims": int(arrays["components"].shape[1]),
            "feature_width": int(arrays["mean"].shape[0]), "params_file": PARAMS_FILE, **(extra or {})}
    (folder / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return folder / PARAMS_FILE


def load_params(folder_or_file: str | Path) -> dict[str, np.ndarray]:
    """Read parameters saved by :func:`save_params` from a folder or the file itself."""
    path = Path(folder_or_file)
    return _load(path / PARAMS_FILE if path.is_dir() else path)
