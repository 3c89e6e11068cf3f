"""The same-lab tissue gate of the transfer recipe: lung against LC25000 colon and far-OOD, on cached features.

Issue 20 found that the feature check's "not lung" was mostly "another lab"; a logistic gate trained
on the same lab's colon separates organ instead (``docs/tissue-gate.md``). Here it is fitted for the
served model on the recipe's own (normalised) features: every TRAIN tile and its augmented copies
against the LC25000 colon tiles and generated far-OOD images, thresholded on clean VALIDATION lung
(a 0.995 quantile, never below 0.5). Its LC25000 colon refusal is reported out of fold (two folds by
near-duplicate group), since the served gate has seen every colon tile.

Example:
    >>> gate, report = fit_tissue_gate(train_x, colon_x, colon_groups, far_x, val_x)
    >>> report["colon_refused_out_of_fold"], report["val_refused"]
    (0.99, 0.005)
"""
from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from imageclf.core import stain as stain_module
from imageclf.core.stain import StainSpec
from training.data.far_ood import make_far_ood_set
from training.gate.arms import LogisticGate
from training.gate.features import colon_fold
from training.transfer.features import extract, load_npz, save_npz

FAR_PER_KIND = 40


def far_ood_features(extractor: Callable[[], keras.Model], cache: Path, *, stain: StainSpec | None,
                     per_kind: int = FAR_PER_KIND) -> np.ndarray:
    """Features of generated far-OOD images (noise, blanks, scenes...; seed 1, not the stress suite's
    seed 0), as the model takes them, cached in ``<cache>/far-ood.npz``."""
    target = cache / "far-ood.npz"
    if not target.is_file():
        far = make_far_ood_set(per_kind, size=(224, 224), seed=1)
        images = np.concatenate(list(far.values()))
        save_npz(target, extract(extractor(), stain_module.tiles_as_model_input(images, stain)),
                 np.full(len(images), -1), [f"{k}:{i}" for k, v in far.items() for i in range(len(v))])
    return load_npz(target)[0]


def colon_groups(root: Path, names: np.ndarray) -> np.ndarray:
    """The near-duplicate group ("label:group") of each cached colon tile (cached by file name)."""
    with (root / "groups.csv").open(newline="") as handle:
        by_name = {Path(r["path"]).name: f"{r['label']}:{r['group']}" for r in csv.DictReader(handle)}
    return np.array([by_name[str(n)] for n in names])


def fit_tissue_gate(lung: np.ndarray, colon: np.ndarray, groups: np.ndarray, far: np.ndarray,
                    val: np.ndarray) -> tuple[LogisticGate, dict]:
    """The served gate (fitted on everything) and what it refuses: clean val lung, far-OOD, and LC25000
    colon out of fold (each fold's colon refused by a gate fitted without it)."""
    def fit(colon_rows: np.ndarray) -> LogisticGate:
        return LogisticGate.fit(lung, np.concatenate([colon[colon_rows], far])).with_threshold(val)

    gate = fit(np.ones(len(colon), bool))
    folds = colon_fold(groups)
    refused = np.zeros(len(colon), bool)
    for fold in (0, 1):
        refused[folds == fold] = fit(folds != fold).refuses(colon[folds == fold])
    return gate, {"threshold": gate.threshold, "val_refused": float(gate.refuses(val).mean()),
                  "far_ood_refused_in_fit": float(gate.refuses(far).mean()),
                  "colon_refused_out_of_fold": float(refused.mean()),
                  "fitted_on": (f"lung: {len(lung)} LC25000 grouped TRAIN features (clean + augmented copies); not lung: "
                                f"{len(colon)} LC25000 colon tiles (same lab) and {len(far)} generated far-OOD images; "
                                "threshold: 0.995 quantile of clean VAL lung, at least 0.5")}
