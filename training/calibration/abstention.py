"""Fit the abstention rule on validation data, and count how often a rule abstains on a set.

The rule itself (and the decision every consumer applies) lives in ``src/imageclf/core/refusal.py``; this
module only chooses its thresholds and reports how often it abstains (:func:`abstention_report`). The
confidence floor is fitted on the validation split only; the colour check, which does not depend on the
model, on validation plus (optionally) training tiles. Measuring the fitted rule on the test split and on
far-OOD images is evaluation: ``training.evaluation.fit_and_measure.evaluate_abstention``.

Example:
    >>> calibrated, info = calibrate_and_fit_abstention(model, val_images, val_labels,
    ...                                                 colour_images=train_images[::5])
    >>> config["abstain"] = info["abstain"]                 # read back by the Space
    >>> abstention_report(AbstainRule.from_dict(info["abstain"]), {"test": test_images},
    ...                   {"test": calibrated.predict(test_images)})["test"]["abstained"]
    0.008
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from imageclf.core.colour import FEATURE_SIDES, ColourCheck, colour_features, hue_saturation_histogram
from imageclf.core.refusal import AbstainRule, colour_ok, confidence_ok
from training.calibration.temperature import (expected_calibration_error, fit_temperature, negative_log_likelihood,
                                              plot_reliability, softmax, with_temperature)
from training.models.architectures import logits_model

# Natural range of each colour feature: sets the least slack a bound gets beyond the fit data.
FEATURE_SCALE = {"tissue_fraction": 1.0, "palette_fraction": 1.0, "saturation": 255.0, "texture": 3.0,
                 "clipped_fraction": 1.0, "flat_fraction": 1.0, "smoothness": 1.0}


def fit_colour_check(
    images: np.ndarray,
    *,
    reject_fraction: float = 0.005,
    palette_mass: float = 0.999,
    margin: float = 0.75,
    min_slack: float = 0.02,
    hue_dilation: int = 1,
    hue_bins: int = 36,
    saturation_bins: int = 8,
) -> ColourCheck:
    """Fit the palette and feature bounds on in-distribution RGB uint8 images (N, H, W, 3).

    The palette is the smallest set of hue x saturation bins holding ``palette_mass`` of the
    coloured pixels (each image weighted equally), grown by ``hue_dilation`` neighbouring hue
    bins (10 degrees each with 36 bins, about the training hue jitter) so that a slightly
    different stain batch still fits while skin, IHC brown or hue-shifted images do not.
    Bounds sit at the quantile that rejects about ``reject_fraction`` of ``images``, then are
    moved further out by ``margin`` times the length of their tail (5% quantile to bound), so
    that unseen in-distribution images are not rejected merely for being a little different.
    Colour variety comes from the number of original slides, not tiles: fit on 1000+ tiles
    spread over many originals (200-tile fits rejected 0-2.3% of unseen LC25000 tiles).

    Example:
        >>> check = fit_colour_check(train_tiles[:300], reject_fraction=0.005)
    """
    if len(images) < 20:
        raise ValueError(f"Need at least 20 in-distribution images to fit the colour check, got {len(images)}.")
    blank = ColourCheck(palette=("1" * saturation_bins,) * hue_bins, bounds={})
    pooled = sum(hue_saturation_histogram(image, blank) for image in images)
    order = np.argsort(pooled, axis=None)[::-1]
    cumulative = np.cumsum(pooled.flat[order]) / max(pooled.sum(), 1e-12)
    keep = order[: int(np.searchsorted(cumulative, palette_mass)) + 1]
    palette = np.zeros(pooled.size, bool)
    palette[keep] = True
    palette = dilate_hue(palette.reshape(pooled.shape), hue_dilation)
    rows = tuple("".join("1" if b else "0" for b in row) for row in palette)
    check = replace(blank, palette=rows)

    values = {name: np.array([colour_features(image, check)[name] for image in images]) for name in FEATURE_SIDES}
    bounds = _quantile_bounds(values, reject_fraction)
    widened = {}
    for name, (low, high) in bounds.items():
        # Extend each bound into its tail by `margin` times the tail's own length (5% quantile to
        # bound); a floor keeps slack for features that never varied (palette share always 1.0).
        q05, q95 = np.percentile(values[name], [5, 95])
        floor = min_slack * FEATURE_SCALE[name]
        widened[name] = (None if low is None else round(low - max(margin * (q05 - low), floor), 6),
                         None if high is None else round(high + max(margin * (high - q95), floor), 6))
    return replace(check, bounds=widened)


def dilate_hue(palette: np.ndarray, steps: int) -> np.ndarray:
    """Grow the palette by ``steps`` neighbouring hue bins each way (hue wraps around)."""
    return np.logical_or.reduce([np.roll(palette, shift, axis=0) for shift in range(-steps, steps + 1)])


def _quantile_bounds(values: dict[str, np.ndarray], reject_fraction: float) -> dict[str, tuple]:
    """Per-feature quantile bounds whose union rejects about ``reject_fraction`` (bisection on q)."""
    def bounds_at(q: float) -> dict[str, tuple]:
        return {name: (float(np.quantile(v, q)) if FEATURE_SIDES[name][0] else None,
                       float(np.quantile(v, 1 - q)) if FEATURE_SIDES[name][1] else None)
                for name, v in values.items()}

    def rejected(bounds: dict[str, tuple]) -> float:
        out = np.zeros(len(next(iter(values.values()))), bool)
        for name, (low, high) in bounds.items():
            out |= (values[name] < low) if low is not None else False
            out |= (values[name] > high) if high is not None else False
        return float(out.mean())

    low_q, high_q = 0.0, 0.5
    for _ in range(40):
        mid = (low_q + high_q) / 2
        low_q, high_q = (low_q, mid) if rejected(bounds_at(mid)) > reject_fraction else (mid, high_q)
    return bounds_at(low_q)


def fit_confidence_threshold(probabilities: np.ndarray, *, abstain_fraction: float,
                             exclude: np.ndarray | None = None) -> float:
    """The highest top-probability floor that abstains on at most ``abstain_fraction`` of the rows.

    Rows flagged in ``exclude`` (already abstained for another reason) count towards the
    budget but are not ranked. Ties never push the rate above the budget.

    Example:
        >>> fit_confidence_threshold(np.array([[0.5, 0.5], [0.9, 0.1], [1.0, 0.0]]), abstain_fraction=0.34)
        0.9
    """
    confidence = np.asarray(probabilities, np.float64).max(axis=1)
    exclude = np.zeros(len(confidence), bool) if exclude is None else np.asarray(exclude, bool)
    budget = int(np.floor(abstain_fraction * len(confidence) + 1e-9)) - int(exclude.sum())
    ranked = np.sort(confidence[~exclude])
    if budget <= 0 or ranked.size == 0:
        return 0.0  # nothing left to spend: no floor
    # Abstain below the (budget+1)-th smallest value: at most `budget` rows fall under it.
    return float(ranked[min(budget, ranked.size - 1)])


def fit_abstention(
    val_rgb: np.ndarray | None,
    val_probabilities: np.ndarray,
    *,
    target_in_dist_abstain: float = 0.01,
    stain_check: bool = True,
    colour_share: float = 0.5,
    colour_images: np.ndarray | None = None,
) -> AbstainRule:
    """Choose the rule's thresholds on validation data so it abstains on about the target share.

    The colour check (``stain_check=True``; needs ``val_rgb``) is fitted first, aiming at
    ``colour_share`` of the target (its widened bounds usually reject fewer); the confidence
    floor then spends what is left of the budget, on validation only (a model is over-confident
    on its own training images). The colour check does not depend on the model, so
    ``colour_images`` may add in-distribution training tiles: a validation split holds few
    original slides, too few to show the full range of stain colours. With
    ``stain_check=False`` (CT, X-ray, any unstained data) only the confidence floor is fitted
    and ``val_rgb`` may be ``None``.

    Example:
        >>> rule = fit_abstention(val_images, val_probabilities, target_in_dist_abstain=0.01)
        >>> rule.method, rule.fitted["val_abstain_rate"]
        ('colour+softmax', 0.0098)
    """
    if not 0.0 <= target_in_dist_abstain < 0.5:
        raise ValueError(f"target_in_dist_abstain must be in [0, 0.5), got {target_in_dist_abstain}.")
    probabilities = np.asarray(val_probabilities, np.float64)
    colour = None
    colour_rejected = np.zeros(len(probabilities), bool)
    if stain_check:
        if val_rgb is None or len(val_rgb) != len(probabilities):
            raise ValueError("The colour check needs the validation images, one per probability row.")
        fit_on = val_rgb if colour_images is None else np.concatenate([colour_images, val_rgb])
        colour = fit_colour_check(fit_on, reject_fraction=target_in_dist_abstain * colour_share)
        probe = AbstainRule(method="colour", colour=colour)
        colour_rejected = np.array([not colour_ok(image, probe) for image in val_rgb])
    floor = fit_confidence_threshold(probabilities, abstain_fraction=target_in_dist_abstain,
                                     exclude=colour_rejected)
    confidence_rejected = probabilities.max(axis=1) < floor
    abstained = colour_rejected | confidence_rejected
    fitted = {
        "on": "validation split",
        "images": int(len(probabilities)),
        "colour_fit_images": int(len(val_rgb) + (0 if colour_images is None else len(colour_images)))
        if stain_check else 0,
        "target_in_dist_abstain": target_in_dist_abstain,
        "val_abstain_rate": round(float(abstained.mean()), 4),
        "val_colour_rate": round(float(colour_rejected.mean()), 4),
        "val_confidence_rate": round(float(confidence_rejected.mean()), 4),
    }
    return AbstainRule(method="colour+softmax" if stain_check else "softmax",
                       min_confidence=floor, colour=colour, fitted=fitted)


def abstention_report(rule: AbstainRule | None, images_by_set: Mapping[str, np.ndarray],
                      probabilities_by_set: Mapping[str, np.ndarray] | None = None,
                      labels_by_set: Mapping[str, np.ndarray] | None = None) -> dict[str, dict]:
    """How often ``rule`` abstains on each named set, overall and per signal.

    Sets without probabilities are judged by the colour check alone (``confidence`` is None).
    Sets with labels (and probabilities) also get ``accuracy_when_answering``: accuracy on the
    images the rule lets through.

    Example:
        >>> abstention_report(rule, {"test": test_images}, {"test": test_probabilities})
        {'test': {'images': 2250, 'abstained': 0.008, 'colour': 0.001, 'confidence': 0.007}}
    """
    probabilities_by_set = probabilities_by_set or {}
    report = {}
    for name, images in images_by_set.items():
        colour = np.array([not colour_ok(image, rule) for image in images], bool)
        probabilities = probabilities_by_set.get(name)
        confidence = None
        abstained = colour
        if probabilities is not None:
            confidence = np.array([not confidence_ok(row, rule) for row in probabilities], bool)
            abstained = colour | confidence
        report[name] = {
            "images": int(len(images)),
            "abstained": round(float(abstained.mean()), 4) if len(images) else None,
            "colour": round(float(colour.mean()), 4) if len(images) else None,
            "confidence": None if confidence is None else round(float(confidence.mean()), 4),
        }
        labels = (labels_by_set or {}).get(name)
        if labels is not None and probabilities is not None:
            kept = ~abstained
            report[name]["accuracy_when_answering"] = (
                round(float((probabilities[kept].argmax(1) == labels[kept]).mean()), 4) if kept.any() else None)
    return report


def calibrate_and_fit_abstention(
    model,
    val_images: np.ndarray,
    val_labels: np.ndarray,
    *,
    target_in_dist_abstain: float = 0.01,
    stain_check: bool = True,
    colour_images: np.ndarray | None = None,
    reliability_plot: str | Path | None = None,
    batch_size: int = 64,
    temperature: float | None = None,
    prepare: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Temperature-scale ``model`` on validation data, then fit the abstention rule on it.

    Returns the calibrated model (built-in layers only) and a dict with ``temperature``,
    ``ece_before``, ``ece_after``, ``nll_before``, ``nll_after`` (all on validation) and
    ``abstain`` (the rule as a dict for config.json). ``colour_images`` (e.g. every 5th
    training tile) widens the colour check's view of stain variety; see :func:`fit_abstention`.
    ``temperature``: one already fitted on validation data (a transfer run fits its own on clean
    plus shifted validation tiles); then only the abstention rule is fitted here. ``prepare``: what the
    model's contract does to pixels before the network (stain normalisation); the colour check still
    judges the pixels as sent.

    Example:
        >>> calibrated, info = calibrate_and_fit_abstention(model, val_x, val_y, colour_images=train_x[::5],
        ...                                                 reliability_plot="hub_model/reliability.png")
    """

    inputs = val_images if prepare is None else prepare(val_images)
    logits = np.asarray(logits_model(model).predict(inputs, batch_size=batch_size, verbose=0), np.float64)
    temperature = fit_temperature(logits, val_labels) if temperature is None else float(temperature)
    before, after = softmax(logits), softmax(logits, temperature)
    if reliability_plot:
        plot_reliability(before, after, val_labels, reliability_plot)
    rule = fit_abstention(val_images, after, target_in_dist_abstain=target_in_dist_abstain,
                          stain_check=stain_check, colour_images=colour_images)
    info = {
        "temperature": round(temperature, 6),
        "ece_before": round(expected_calibration_error(before, val_labels), 4),
        "ece_after": round(expected_calibration_error(after, val_labels), 4),
        "nll_before": round(negative_log_likelihood(logits, val_labels), 4),
        "nll_after": round(negative_log_likelihood(logits, val_labels, temperature), 4),
        "abstain": rule.to_dict(),
    }
    return with_temperature(model, temperature), info
