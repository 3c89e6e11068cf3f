"""Grouped k-fold cross-validation: every original photograph is tested exactly once.

One grouped test split holds only ~110 originals (each with ~20 rotated/flipped copies), so a
single misjudged original moves test accuracy by ~1%. Folds give a mean +/- std over five
disjoint test sets, and the pooled figure covers all 15,000 tiles.

Usage:
    # 1. write one manifest per fold (test = fold k; val carved from the other folds' groups)
    python -m training.data.folds split --data ../shared/data/lc25000-lung-224 --folds 5 \
        --out training/splits/folds
    # 2. train each fold with the usual CLI
    python -m training.train --manifest training/splits/folds/fold-0.csv --out runs/fold-0 ...
    # 3. summarise the test metrics of the fold runs
    python -m training.data.folds summary runs/fold-0 runs/fold-1 ... --out runs/folds-summary.json
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from training.data.samples import Sample, index_dataset, leaked_groups, write_manifest

# name in the summary -> path in metrics.json
SUMMARY_KEYS = {
    "accuracy": ("accuracy",),
    "macro_f1": ("macro_f1",),
    "cancer_sensitivity": ("cancer_sensitivity",),
    "ece_test": ("calibration", "ece_15_bins_test_after"),
    "abstained_test": ("abstention", "test", "abstained"),
}


def grouped_folds(samples: list[Sample], *, folds: int = 5, val_fraction: float = 0.15,
                  seed: int = 0) -> list[list[Sample]]:
    """Split whole groups into ``folds`` test folds, per class, balanced by tile count.

    For fold k, the groups of fold k are ``test``; of the remaining groups, about
    ``val_fraction`` of the class's tiles (whole groups) are ``val``; the rest ``train``.

    Example:
        >>> manifests = grouped_folds(index_dataset("../shared/data/lc25000-lung-224"), folds=5)
        >>> {s.split for s in manifests[0]}
        {'test', 'train', 'val'}
    """
    if folds < 2:
        raise ValueError(f"Need at least 2 folds, got {folds}.")
    by_class: dict[str, dict[str, list[Sample]]] = defaultdict(lambda: defaultdict(list))
    for sample in samples:
        by_class[sample.label][sample.group].append(sample)
    rng = random.Random(seed)
    fold_of: dict[str, int] = {}
    val_order: dict[str, list[str]] = {}
    for label in sorted(by_class):
        groups = sorted(by_class[label].items())
        rng.shuffle(groups)
        size = [0] * folds
        for group, members in groups:
            k = min(range(folds), key=lambda i: size[i])  # the emptiest fold takes the group
            fold_of[group] = k
            size[k] += len(members)
        val_order[label] = [group for group, _ in groups]
    manifests = []
    for k in range(folds):
        assigned: list[Sample] = []
        for label, groups in by_class.items():
            target = val_fraction * sum(len(m) for m in groups.values())
            filled = 0
            for group in val_order[label]:
                members = groups[group]
                if fold_of[group] == k:
                    split = "test"
                elif filled + len(members) / 2 <= target:
                    split, filled = "val", filled + len(members)
                else:
                    split = "train"
                assigned.extend(replace(m, split=split) for m in members)
        assert not leaked_groups(assigned)
        manifests.append(sorted(assigned, key=lambda s: s.path))
    return manifests


def summarise(run_dirs: list[str | Path]) -> dict:
    """Mean, std and per-fold values of the test metrics in each run's ``metrics.json``,
    plus the pooled accuracy over all folds' test tiles (from the confusion matrices)."""
    rows = []
    for run in run_dirs:
        metrics = json.loads((Path(run) / "metrics.json").read_text())
        matrix = metrics["confusion_matrix"]["rows_true_cols_pred"]
        rows.append({"run": str(run), **{key: _metric(metrics, path) for key, path in SUMMARY_KEYS.items()},
                     "test_tiles": int(sum(map(sum, matrix))),
                     "correct": int(sum(matrix[i][i] for i in range(len(matrix))))})
    summary: dict = {"folds": rows}
    for key in SUMMARY_KEYS:
        values = [row[key] for row in rows if row[key] is not None]
        if len(values) >= 2:
            summary[key] = {"mean": statistics.fmean(values), "std": statistics.stdev(values),
                            "min": min(values), "max": max(values)}
    summary["pooled_accuracy"] = sum(r["correct"] for r in rows) / sum(r["test_tiles"] for r in rows)
    summary["pooled_test_tiles"] = sum(r["test_tiles"] for r in rows)
    return summary


def _metric(metrics: dict, path: tuple[str, ...]) -> float | None:
    value = metrics
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    split = sub.add_parser("split", help="write one grouped manifest per fold")
    split.add_argument("--data", required=True)
    split.add_argument("--folds", type=int, default=5)
    split.add_argument("--seed", type=int, default=0)
    split.add_argument("--out", required=True, help="folder for fold-<k>.csv")
    summary = sub.add_parser("summary", help="mean +/- std of the fold runs' test metrics")
    summary.add_argument("runs", nargs="+")
    summary.add_argument("--out", help="also write the summary as JSON here")
    summary.add_argument("--markdown", help="also write a Markdown table here (e.g. hub_model/cross_validation.md)")
    args = parser.parse_args(argv)
    if args.command == "split":
        for k, manifest in enumerate(grouped_folds(index_dataset(args.data), folds=args.folds, seed=args.seed)):
            path = Path(args.out) / f"fold-{k}.csv"
            write_manifest(manifest, path)
            counts = {name: sum(s.split == name for s in manifest) for name in ("train", "val", "test")}
            print(f"{path}: {counts}")
        return
    result = summarise(args.runs)
    for key in SUMMARY_KEYS:
        if key in result:
            print(f"{key:22s} {result[key]['mean']:.4f} +/- {result[key]['std']:.4f} "
                  f"(min {result[key]['min']:.4f}, max {result[key]['max']:.4f})")
    print(f"pooled accuracy        {result['pooled_accuracy']:.4f} over {result['pooled_test_tiles']} test tiles")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(summary_markdown(result))


def summary_markdown(result: dict) -> str:
    """The fold summary as a Markdown section (the model card includes it)."""
    names = {"accuracy": "accuracy", "macro_f1": "macro F1", "cancer_sensitivity": "cancer sensitivity",
             "ece_test": "ECE (15 bins)", "abstained_test": "abstained"}
    keys = [key for key in SUMMARY_KEYS if key in result]
    lines = ["The same recipe trained five times, each time testing on a different fifth of the",
             "originals (grouped folds, `training/splits/folds/`; validation carved from the other four",
             "fifths). Every one of the 15,000 tiles is a test tile exactly once.", "",
             "| fold | test tiles | " + " | ".join(names[k] for k in keys) + " |",
             "| --- | --- | " + " | ".join("---" for _ in keys) + " |"]
    for k, row in enumerate(result["folds"]):
        lines.append(f"| {k} | {row['test_tiles']} | "
                     + " | ".join("-" if row[key] is None else f"{row[key]:.2%}" for key in keys) + " |")
    lines.append("| **mean +/- std** | | " + " | ".join(
        f"**{result[k]['mean']:.2%} +/- {result[k]['std']:.2%}**" for k in keys) + " |")
    lines += ["", f"Pooled accuracy over all {result['pooled_test_tiles']:,} test tiles: "
              f"{result['pooled_accuracy']:.2%}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
