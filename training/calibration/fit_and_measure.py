"""Steps 5-6 of training: calibrate and fit abstention on validation, then measure on test once.

Example:
    >>> calibrated, metrics, extras = calibrate_and_evaluate(model, arrays, class_ids=ids, info=info,
    ...                                                      out="hub_model", data_root=data)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from imageclf.core.refusal import AbstainRule
from training.calibration.abstention import calibrate_and_fit_abstention, evaluate_abstention
from training.calibration.temperature import expected_calibration_error, logits_model, softmax
from training.data.catalog import SHARED_DATA
from training.evaluation.evaluate import classification_metrics
from training.evaluation.uncertainty import group_bootstrap_ci


def calibrate_and_evaluate(model, arrays: dict, *, class_ids: list[str], info, out: str | Path, data_root: str | Path,
                           test_groups: list[str] | None = None, temperature: float | None = None):
    """Return the calibrated model, the test metrics, and the config entries for export.

    ``arrays`` maps "train"/"val"/"test" to (uint8 images, integer labels); ``test_groups``
    (one group id per test image) adds a 95% interval for the accuracy, resampling groups.
    """

    out = Path(out)
    val_images, val_labels = arrays["val"]
    test_images, test_labels = arrays["test"]
    # Every 5th training tile widens the colour check's view of stain variety.
    calibrated, calibration = calibrate_and_fit_abstention(
        model, val_images, val_labels, colour_images=arrays["train"][0][::5], stain_check=info.colour_check,
        reliability_plot=out / "reliability.png", temperature=temperature)
    rule = AbstainRule.from_dict(calibration["abstain"])

    logits = np.asarray(logits_model(model).predict(test_images, batch_size=64, verbose=0), np.float64)
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
                                                test_labels=test_labels, other_datasets=others)
    extras = {"abstain": calibration["abstain"], "calibration": {"temperature": calibration["temperature"],
                                                                 "applied": "inside model.keras (layer 'temperature')"}}
    return calibrated, metrics, extras
