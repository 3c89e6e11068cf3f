"""Evaluate a classifier on one split of its manifest: metrics, confusion matrix, plots.

Usage:
    python -m training.evaluation.evaluate --model hub_model --data ../shared/data/lc25000-lung-224 \
        --manifest training/splits/lc25000-lung-grouped.csv --split test --out /tmp/eval
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from imageclf.model.config import read_config
from imageclf.model.predictor import Predictor
from training.data.samples import load_split, read_manifest


def classification_metrics(
    y_true: np.ndarray, probabilities: np.ndarray, *, class_ids: list[str], benign_classes: tuple[str, ...] = ()
) -> dict:
    """Accuracy, per-class precision/recall/F1/FNR, macro-F1, confusion matrix.

    With ``benign_classes`` also the cancer sensitivity: the share of cancer images
    predicted as any cancer class (a cancer called the wrong cancer is still caught).
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(probabilities).argmax(axis=1)
    n = len(class_ids)
    confusion = np.zeros((n, n), dtype=int)
    np.add.at(confusion, (y_true, y_pred), 1)
    per_class = {}
    for i, cid in enumerate(class_ids):
        tp = confusion[i, i]
        support = confusion[i].sum()
        predicted = confusion[:, i].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[cid] = {
            "precision": round(float(precision), 4),
            "recall": round(float(recall), 4),
            "f1": round(float(f1), 4),
            "false_negative_rate": round(float(1 - recall), 4),
            "support": int(support),
        }
    metrics = {
        "accuracy": round(float((y_pred == y_true).mean()), 4),
        "macro_f1": round(float(np.mean([m["f1"] for m in per_class.values()])), 4),
        "num_images": int(len(y_true)),
        "per_class": per_class,
        "confusion_matrix": {"labels": class_ids, "rows_true_cols_pred": confusion.tolist()},
    }
    benign = [class_ids.index(c) for c in benign_classes if c in class_ids]
    if benign:
        is_cancer = ~np.isin(y_true, benign)
        caught = ~np.isin(y_pred[is_cancer], benign)
        metrics["cancer_sensitivity"] = round(float(caught.mean()), 4) if caught.size else None
    return metrics


def plot_confusion_matrix(metrics: dict, path: str | Path, *, title: str = "Confusion matrix (test)") -> None:
    """Save the confusion matrix as a PNG with counts in the cells."""

    matplotlib.use("Agg")

    labels = metrics["confusion_matrix"]["labels"]
    matrix = np.array(metrics["confusion_matrix"]["rows_true_cols_pred"])
    fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 2.5, 1.2 * len(labels) + 2))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", color="white" if value > matrix.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_history(history: dict, path: str | Path) -> None:
    """Save training curves (loss and accuracy, train vs val) as a PNG."""

    matplotlib.use("Agg")

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, key in zip(axes, ("loss", "accuracy")):
        for prefix in ("", "val_"):
            if prefix + key in history:
                ax.plot(range(1, len(history[prefix + key]) + 1), history[prefix + key], label=(prefix or "train_") + key)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def evaluate_folder(model_dir: str | Path, *, data: str | Path, manifest: str | Path, split: str = "test") -> dict:
    """Load an exported model folder and compute its metrics on one manifest split."""

    model_dir = Path(model_dir)
    config = read_config(model_dir)
    samples = [s for s in read_manifest(manifest) if s.split == split]
    images, labels = load_split(data, samples, class_ids=config.labels, size=tuple(config.input_size))
    # Through the model's contract (its stain step included), on the canonical Keras model.
    probabilities = Predictor(model_dir, runtime="keras").classify_fields(list(images)).probabilities
    return classification_metrics(labels, probabilities, class_ids=config.labels,
                                  benign_classes=tuple(config.benign_classes))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="hub_model", help="exported model folder")
    parser.add_argument("--data", required=True, help="dataset root")
    parser.add_argument("--manifest", required=True, help="split manifest CSV")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--out", help="folder for metrics.json and confusion_matrix.png")
    args = parser.parse_args(argv)
    metrics = evaluate_folder(args.model, data=args.data, manifest=args.manifest, split=args.split)
    print(json.dumps({k: v for k, v in metrics.items() if k != "per_class"}, indent=2))
    for cid, m in metrics["per_class"].items():
        print(f"{cid:>24}: precision {m['precision']:.4f} recall {m['recall']:.4f} f1 {m['f1']:.4f} (n={m['support']})")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        plot_confusion_matrix(metrics, out / "confusion_matrix.png", title=f"Confusion matrix ({args.split})")


if __name__ == "__main__":
    main()
