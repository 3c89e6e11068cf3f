"""Temperature scaling: make the model's probabilities mean what they say.

A network trained with cross-entropy is usually over-confident. One number, the temperature T,
fitted on validation logits by minimising the negative log-likelihood, fixes most of it
without changing any prediction (argmax of logits/T is argmax of logits). The calibrated model
is the same graph with a built-in ``Rescaling(1/T)`` layer before the softmax, so it still
loads with ``safe_mode=True`` and needs no custom code.

Example:
    >>> logits = logits_model(model).predict(val_images)     # training.models.architectures
    >>> t = fit_temperature(logits, val_labels)
    >>> calibrated = with_temperature(model, t)
    >>> expected_calibration_error(calibrated.predict(val_images), val_labels)
"""
from __future__ import annotations

from pathlib import Path

import keras
import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from training.models.architectures import model_input

# Temperatures outside this range mean something is wrong (or the set is too easy to tell).
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` in float64 (stable: max subtracted)."""
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean cross-entropy of ``softmax(logits / temperature)`` against integer ``labels``."""
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=-1))
    return float(np.mean(log_norm - z[np.arange(len(z)), np.asarray(labels, int)]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, *, iterations: int = 60) -> float:
    """The temperature minimising validation NLL, in [0.05, 20].

    NLL is convex in 1/T, hence unimodal in log T: a coarse log-spaced grid finds the basin
    and golden-section search refines it. A set the model gets entirely right with room to
    spare pushes T to the lower end; that end is a clamp, not a fit.

    Example:
        >>> fit_temperature(np.array([[4.0, 0.0], [0.0, 4.0], [4.0, 0.0]]), np.array([0, 1, 1]))
        5.77...
    """
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels, int)
    if logits.ndim != 2 or len(logits) != len(labels) or len(labels) == 0:
        raise ValueError(f"Expected logits (N, C) and N labels, got {logits.shape} and {labels.shape}.")

    def loss(log_t: float) -> float:
        return negative_log_likelihood(logits, labels, float(np.exp(log_t)))

    grid = np.linspace(np.log(MIN_TEMPERATURE), np.log(MAX_TEMPERATURE), 41)
    best = int(np.argmin([loss(g) for g in grid]))
    low, high = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = loss(a), loss(b)
    for _ in range(iterations):
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = loss(a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = loss(b)
    return float(np.exp((low + high) / 2.0))


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, *, bins: int = 15) -> float:
    """Top-label ECE: sum over equal-width confidence bins of |accuracy - confidence| x share.

    Example:
        >>> expected_calibration_error(np.array([[0.9, 0.1], [0.9, 0.1]]), np.array([0, 1]))
        0.4
    """
    confidence, accuracy, count = reliability_curve(probabilities, labels, bins=bins)
    return float(np.sum(count / count.sum() * np.abs(accuracy - confidence))) if count.size else 0.0


def reliability_curve(probabilities: np.ndarray, labels: np.ndarray, *, bins: int = 15):
    """(mean confidence, accuracy, count) per non-empty equal-width bin, for plotting."""
    probabilities, labels = np.asarray(probabilities, np.float64), np.asarray(labels, int)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    # Bin i holds confidences in (i/bins, (i+1)/bins]; a confidence of exactly 0 joins bin 0.
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    rows = [(confidence[index == i].mean(), correct[index == i].mean(), int((index == i).sum()))
            for i in range(bins) if (index == i).any()]
    return tuple(np.array(column) for column in zip(*rows, strict=True)) if rows else (np.array([]),) * 3


def plot_reliability(probabilities_before: np.ndarray, probabilities_after: np.ndarray, labels: np.ndarray,
                     path: str | Path, *, bins: int = 15, title: str = "Reliability (validation)") -> None:
    """Save a reliability diagram, before vs after temperature scaling, ECE in the legend.

    Example:
        >>> plot_reliability(softmax(logits), softmax(logits, t), labels, "hub_model/reliability.png")
    """

    matplotlib.use("Agg")

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5, 6), height_ratios=[3, 1], sharex=True)
    top.plot([0, 1], [0, 1], color="0.6", linestyle="--", label="perfect calibration")
    width = 0.4 / bins
    for offset, probabilities, name, marker in ((-width / 2, probabilities_before, "before", "o"),
                                                (width / 2, probabilities_after, "after", "s")):
        confidence, accuracy, count = reliability_curve(probabilities, labels, bins=bins)
        ece = expected_calibration_error(probabilities, labels, bins=bins)
        top.plot(confidence, accuracy, marker=marker, label=f"{name} (ECE {ece:.3f})")
        bottom.bar(confidence + offset, count, width=width, alpha=0.7, label=name)
    top.set(ylabel="accuracy", title=title, xlim=(0, 1), ylim=(0, 1.02))
    top.legend(loc="upper left")
    bottom.set(xlabel="confidence (top probability)", ylabel="images", yscale="log")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def with_temperature(model: keras.Model, temperature: float) -> keras.Model:
    """A new model: ``model``'s graph up to ``"logits"``, then ``Rescaling(1/T)``, then softmax.

    Built-in layers only, so it saves and loads with ``safe_mode=True``. Applying it to an
    already calibrated model replaces the old temperature (the graph is cut at ``"logits"``).

    Example:
        >>> calibrated = with_temperature(model, 1.7)
        >>> calibrated.get_layer("temperature").scale   # 1 / 1.7
    """
    if not (MIN_TEMPERATURE / 10 <= temperature <= MAX_TEMPERATURE * 10) or not np.isfinite(temperature):
        raise ValueError(f"Temperature {temperature!r} is not a sensible positive number.")
    logits = model.get_layer("logits").output
    scaled = keras.layers.Rescaling(1.0 / float(temperature), name="temperature")(logits)
    probabilities = keras.layers.Softmax(name="probabilities")(scaled)
    return keras.Model(model_input(model), probabilities, name=model.name)
