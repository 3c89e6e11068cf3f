"""Steps 5-6 of training: calibrate and fit abstention on validation, then measure on test once.

The fitting is ``training.calibration``'s; this module measures the result once: test metrics with a
95% interval over groups, calibration error before and after, and the abstention rule on the test
split, on generated far-OOD images and other-stain look-alikes (``training.data.far_ood``) and on the
other bundled datasets (:func:`evaluate_abstention`).

Example:
    >>> calibrated, metrics, extras = calibrate_and_evaluate(model, arrays, class_ids=ids, info=info,
    ...                                                      out="hub_model", data_root=data)
    >>> metrics["abstention"]["far_ood"]["blank_white"]["abstained"]
    1.0
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from imageclf.core.refusal import AbstainRule
from training.calibration.abstention import abstention_report, calibrate_and_fit_abstention
from training.calibration.temperature import expected_calibration_error, softmax
from training.data.catalog import SHARED_DATA
from training.data.far_ood import make_far_ood_set, other_stain_variants, shared_dataset_images
from training.evaluation.evaluate import classification_metrics
from training.evaluation.uncertainty import group_bootstrap_ci
from training.models.architectures import logits_model


def calibrate_and_evaluate(model, arrays: dict, *, class_ids: list[str], info, out: str | Path, data_root: str | Path,
                           test_groups: list[str] | None = None, temperature: float | None = None,
                           prepare: Callable[[np.ndarray], np.ndarray] | None = None):
    """Return the calibrated model, the test metrics, and the config entries for export.

    ``arrays`` maps "train"/"val"/"test" to (uint8 images, integer labels); ``test_groups``
    (one group id per test image) adds a 95% interval for the accuracy, resampling groups.
    ``prepare``: the model contract's step before the network (stain normalisation of each tile,
    ``imageclf.core.stain.tiles_as_model_input``); every model call goes through it, the colour check not.
    """

    out = Path(out)
    val_images, val_labels = arrays["val"]
    test_images, test_labels = arrays["test"]
    # Every 5th training tile widens the colour check's view of stain variety.
    calibrated, calibration = calibrate_and_fit_abstention(
        model, val_images, val_labels, colour_images=arrays["train"][0][::5], stain_check=info.colour_check,
        reliability_plot=out / "reliability.png", temperature=temperature, prepare=prepare)
    rule = AbstainRule.from_dict(calibration["abstain"])

    prepare = prepare or (lambda images: images)
    logits = np.asarray(logits_model(model).predict(prepare(test_images), batch_size=64, verbose=0), np.float64)
    probabilities = softmax(logits, calibration["temperature"])
    metrics = classification_metrics(test_labels, probabilities, class_ids=class_ids,
                                     benign_classes=info.benign_classes)
    if test_groups is not None:
        metrics["accuracy_ci95"] = group_bootstrap_ci(probabilities.argmax(1) == test_labels, test_groups)
    metrics["calibration"] = {
        "temperature": calibration["temperature"],
        "ece_15_bins_val_before": calibration["ece_before"],
        "ece_15_bins_val_after": calibration["ece_after"],
        "ece_15_bins_test_before": round(expected_calibration_error(softmax(logits), test_labels), 4),
        "ece_15_bins_test_after": round(expected_calibration_error(probabilities, test_labels), 4),
    }
    # Other bundled datasets are out of domain for this one (CT slices, dermoscopy, ...).
    others = {p.name: p for p in sorted(SHARED_DATA.glob("*"))
              if p.is_dir() and p.resolve() != Path(data_root).resolve()}
    # With the labels, the test report also gives the accuracy on the tiles the model answers.
    metrics["abstention"] = evaluate_abstention(calibrated, rule, test_images, test_probabilities=probabilities,
                                                test_labels=test_labels, other_datasets=others, prepare=prepare)
    extras = {"abstain": calibration["abstain"], "calibration": {"temperature": calibration["temperature"],
                                                                 "applied": "inside model.keras (layer 'temperature')"}}
    return calibrated, metrics, extras


def evaluate_abstention(
    model,
    rule: AbstainRule | None,
    test_images: np.ndarray,
    *,
    test_probabilities: np.ndarray | None = None,
    test_labels: np.ndarray | None = None,
    n_per_kind: int = 50,
    seed: int = 0,
    other_datasets: Mapping[str, str | Path] | None = None,
    batch_size: int = 64,
    prepare: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict[str, Any]:
    """Abstention on the test split and on generated far-OOD kinds (run through ``model``).

    ``other_datasets`` maps a kind name to another dataset's folder (e.g. ``{"ct":
    "../shared/data/chest-ct"}``); absent folders are skipped. "Other stain" look-alikes are
    made from test tiles and reported separately: they are nearer OOD, and the colour check
    may let some through.

    Example:
        >>> evaluate_abstention(calibrated, rule, test_x)["far_ood"]["uniform_noise"]["abstained"]
        1.0
    """

    size = tuple(test_images.shape[1:3])
    sets = make_far_ood_set(n_per_kind, size=size, seed=seed)
    picks = np.random.default_rng(seed).choice(len(test_images), min(n_per_kind, len(test_images)), replace=False)
    stains = other_stain_variants(np.asarray(test_images)[np.sort(picks)], seed=seed)
    for kind, root in (other_datasets or {}).items():
        sets |= shared_dataset_images(root, n_per_kind, kind=kind, size=size, seed=seed)

    def probabilities(images: np.ndarray) -> np.ndarray:   # the colour check sees ``images``, the network prepared ones
        inputs = images if prepare is None else prepare(images)
        return np.asarray(model.predict(inputs, batch_size=batch_size, verbose=0))

    if test_probabilities is None:
        test_probabilities = probabilities(test_images)
    return {
        "test": abstention_report(rule, {"test": test_images}, {"test": test_probabilities},
                                  None if test_labels is None else {"test": test_labels})["test"],
        "far_ood": abstention_report(rule, sets, {k: probabilities(v) for k, v in sets.items()}),
        "other_stains": abstention_report(rule, stains, {k: probabilities(v) for k, v in stains.items()}),
        "n_per_kind": n_per_kind,
    }
