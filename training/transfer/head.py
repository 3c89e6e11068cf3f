"""Step 2 of the transfer recipe: a softmax head on the cached features, and the ablation that picks its data.

Example:
    >>> head = fit_head(train_x, train_y, weight_decay=1e-3)
    >>> head_metrics(head, 1.0, test_x, test_y)["accuracy"]
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.calibration.temperature import (expected_calibration_error, fit_temperature, negative_log_likelihood,
                                              softmax)
from training.data.samples import read_manifest
from training.evaluation.evaluate import classification_metrics
from training.transfer.features import BENIGN, CLASS_IDS, load_npz


@dataclass
class Head:
    """A linear softmax layer on raw pooled features: ``logits = features @ kernel + bias``."""
    kernel: np.ndarray  # (D, C)
    bias: np.ndarray  # (C,)
    weight_decay: float

    def logits(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(features, np.float64) @ self.kernel + self.bias


def fit_head(features: np.ndarray, labels: np.ndarray, *, weight_decay: float, steps: int = 300,
             learning_rate: float = 0.02, num_classes: int = 3) -> Head:
    """Multinomial logistic regression with L2 ``weight_decay``, full-batch Adam, in numpy.

    Features are standardised while fitting (well-conditioned steps), and the scaling is folded
    back into the kernel, so the result is one plain ``Dense`` layer on the raw features.
    Convex: the same data give the same head, whatever the seed.

    Example:
        >>> head = fit_head(train_x, train_y, weight_decay=1e-3)
        >>> (head.logits(val_x).argmax(1) == val_y).mean()
    """
    x = np.asarray(features, np.float32)  # float32: each step reads the whole matrix twice
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = (x - mean) / scale
    onehot = np.eye(num_classes, dtype=np.float32)[np.asarray(labels)]
    w, b = np.zeros((x.shape[1], num_classes), np.float32), np.zeros(num_classes, np.float32)
    moments = [np.zeros_like(w), np.zeros_like(w), np.zeros_like(b), np.zeros_like(b)]
    for step in range(1, steps + 1):
        logits = z @ w + b
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        grad_w = z.T @ (p - onehot) / len(z) + weight_decay * w
        grad_b = (p - onehot).mean(axis=0)
        for i, (param, grad) in enumerate(((w, grad_w), (b, grad_b))):
            m, v = moments[2 * i], moments[2 * i + 1]
            m *= 0.9
            m += 0.1 * grad
            v *= 0.999
            v += 0.001 * grad * grad
            param -= learning_rate * (m / (1 - 0.9 ** step)) / (np.sqrt(v / (1 - 0.999 ** step)) + 1e-8)
    kernel = w.astype(np.float64) / scale[:, None]
    return Head(kernel=kernel, bias=b.astype(np.float64) - mean.astype(np.float64) @ kernel, weight_decay=weight_decay)


def select_head(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], *,
                decays: tuple[float, ...] = (1e-3, 1e-2, 3e-2)) -> tuple[Head, dict]:
    """The head whose weight decay gives the lowest validation NLL (after its own temperature)."""
    best, scores = None, {}
    for decay in decays:
        head = fit_head(*train, weight_decay=decay)
        logits = head.logits(val[0])
        nll = negative_log_likelihood(logits, val[1], fit_temperature(logits, val[1]))
        scores[decay] = {"val_nll": nll, "val_accuracy": float((logits.argmax(1) == val[1]).mean())}
        if best is None or nll < scores[best.weight_decay]["val_nll"]:
            best = head
    return best, scores


def head_metrics(head: Head, temperature: float, features: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy, macro-F1, cancer sensitivity and 15-bin ECE of a head on one set."""
    probabilities = softmax(head.logits(features), temperature)
    metrics = classification_metrics(labels, probabilities, class_ids=CLASS_IDS, benign_classes=BENIGN)
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
            "cancer_sensitivity": metrics["cancer_sensitivity"],
            "ece": round(expected_calibration_error(probabilities, labels, bins=15), 4),
            "cancer_called_benign": round(float(np.mean(np.isin(probabilities[~np.isin(labels, benign_ids())].argmax(1),
                                                                benign_ids()))), 4)}


def benign_ids() -> list[int]:
    return [CLASS_IDS.index(c) for c in BENIGN]


def training_set(cache: Path, arm: str, seeds: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Clean training features plus the augmented sets ``<arm>-s<seed>`` ("none": clean only)."""
    parts = [load_npz(cache / "clean-train.npz")[:2]]
    if arm != "none":
        parts += [load_npz(cache / f"{arm}-s{seed}.npz")[:2] for seed in seeds]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def evaluate_arm(head: Head, temperature: float, sets: dict) -> dict:
    """Metrics of a head on every labelled set of ``sets`` ({name: (features, labels)})."""
    return {name: head_metrics(head, temperature, x, y) for name, (x, y) in sets.items() if (y >= 0).all()}


def calibration_set(val: tuple[np.ndarray, np.ndarray], shifted_val: dict) -> tuple[np.ndarray, np.ndarray]:
    """Clean VAL plus the shifted VAL sets: the temperature is fitted on the conditions the model will
    meet (fitted on clean val alone it came out below 1, and the harder test split was over-confident)."""
    parts = [val, *shifted_val.values()]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def ablation(cache: Path, shifted: dict, *, policies: list[str], seeds: list[int]) -> list[dict]:
    """No augmentation vs each policy, one row per (policy, seed): selected on validation only."""
    val = load_npz(cache / "clean-val.npz")[:2]
    test = load_npz(cache / "clean-test.npz")[:2]
    calibration = calibration_set(val, shifted["val"])
    rows = []
    for arm in ["none", *policies]:
        for seed in seeds if arm != "none" else seeds[:1]:
            if arm != "none" and not (cache / f"{arm}-s{seed}.npz").is_file():
                continue
            head, _ = select_head(training_set(cache, arm, [seed]), val)
            t = fit_temperature(head.logits(calibration[0]), calibration[1])
            rows.append({"arm": arm, "seed": seed, "weight_decay": head.weight_decay, "temperature": t,
                         "val": evaluate_arm(head, t, {"clean": val, **shifted["val"]}),
                         "test": evaluate_arm(head, t, {"clean": test, **shifted["test"]})})
            print(f"ablation {arm} s{seed}: val {rows[-1]['val']['clean']['accuracy']:.4f} "
                  f"test {rows[-1]['test']['clean']['accuracy']:.4f}", flush=True)
    return rows


def val_score(row: dict) -> float:
    """Selection score, validation only: mean accuracy over clean and shifted val sets."""
    return float(np.mean([m["accuracy"] for m in row["val"].values()]))


def grouped_folds(cache: Path, folds_dir: Path, *, arm: str, seeds: list[int]) -> list[dict]:
    """Test metrics per grouped fold; augmented copies used only for tiles in that fold's train split."""
    rows_by_path = {}
    for split in ("train", "val", "test"):
        x, y, paths = load_npz(cache / f"clean-{split}.npz")
        rows_by_path |= {p: (x[i], y[i]) for i, p in enumerate(paths)}
    variants = [load_npz(cache / f"{arm}-s{seed}.npz") for seed in seeds if arm != "none"]
    results = []
    for fold in sorted(folds_dir.glob("fold-*.csv")):
        samples = read_manifest(fold)
        part = {split: [s.path for s in samples if s.split == split] for split in ("train", "val", "test")}
        xy = {split: (np.stack([rows_by_path[p][0] for p in paths]), np.array([rows_by_path[p][1] for p in paths]))
              for split, paths in part.items()}
        train_paths = set(part["train"])
        extra = [(x[keep], y[keep]) for x, y, paths in variants for keep in [np.isin(paths, list(train_paths))]]
        train = (np.concatenate([xy["train"][0], *[e[0] for e in extra]]),
                 np.concatenate([xy["train"][1], *[e[1] for e in extra]]))
        head, _ = select_head(train, xy["val"])
        t = fit_temperature(head.logits(xy["val"][0]), xy["val"][1])
        results.append({"fold": fold.stem, **head_metrics(head, t, *xy["test"])})
        print(f"{fold.stem}: {results[-1]}", flush=True)
    return results
