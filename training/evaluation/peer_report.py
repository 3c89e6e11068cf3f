"""The peer benchmark's report: ratios to our model, the Markdown tables, and how each number was measured.

``training.evaluation.compare_peers`` measures the models; this module only words the result.

Example:
    >>> add_ratios(rows)              # rows[0] is ours; adds ``ratio_to_ours`` to every row
    >>> print(markdown(rows, method_notes(args, env=env, split=split, ours_info=info)))
"""
from __future__ import annotations

from pathlib import Path

COLUMNS = {  # key -> (column title, format); every column also gets a ratio to ours
    "accuracy": ("test acc", "{:.4f}"), "macro_f1": ("macro-F1", "{:.4f}"), "params": ("params", "{:,}"),
    "file_mb": (".keras MB", "{:.2f}"), "latency_ms_median": ("latency ms (median)", "{:.2f}"),
    "latency_ms_p95": ("latency ms (p95)", "{:.2f}"), "throughput_ips": ("img/s @64", "{:.1f}"),
    "train_seconds": ("train s", "{:.1f}"),
}


def add_ratios(rows: list[dict]) -> None:
    """Each column as a ratio to ours (rows[0]); None where a value is missing or ours is 0."""
    ours = rows[0]
    for row in rows:
        row["ratio_to_ours"] = {
            key: (round(row[key] / ours[key], 4) if isinstance(row.get(key), (int, float))
                  and isinstance(ours.get(key), (int, float)) and ours[key] else None)
            for key in COLUMNS
        }


def markdown(rows: list[dict], notes: list[str]) -> str:
    """Two tables (values; ratios to ours) and the notes that say how they were measured."""
    def cell(value, fmt: str) -> str:
        return "n/a" if value is None else fmt.format(value)

    titles = " | ".join(title for title, _ in COLUMNS.values())
    lines = ["## Results", "", f"| model | {titles} | epochs |", "|---" * (len(COLUMNS) + 2) + "|"]
    for r in rows:
        values = " | ".join(cell(r.get(k), fmt) for k, (_, fmt) in COLUMNS.items())
        lines.append(f"| {r['name']} | {values} | {cell(r.get('epochs_run'), '{}')} |")
    lines += ["", "## Ratio to ours", "", f"| model | {titles} |", "|---" * (len(COLUMNS) + 1) + "|"]
    for r in rows:
        ratios = " | ".join(cell(r["ratio_to_ours"][k], "{:.3f}x") for k in COLUMNS)
        lines.append(f"| {r['name']} | {ratios} |")
    return "\n".join(lines + ["", "## How this was measured", ""] + [f"- {n}" for n in notes]) + "\n"


def method_notes(args, *, env: dict, split: dict, ours_info: dict) -> list[str]:
    """How every number was obtained, in words, for the report."""
    sizes = ", ".join(f"{k} {len(v)}" for k, v in split.items())
    return [
        f"Same grouped split for all ({Path(args.manifest).name}: {sizes} images); test accuracy and macro-F1 "
        "from `training.evaluation.evaluate.classification_metrics`.",
        f"Peers: Adam lr {args.learning_rate}, batch {args.batch_size}, the project's augmentation, wall-clock "
        f"budget {args.budget_minutes} min (checked every {args.check_every} batch(es); graph tracing counts), "
        f"at most {args.max_epochs} epochs, weights of the best val_loss epoch. Train s = wall clock of `fit`, "
        "validation included (a partial last epoch is validated too, so it can overrun the budget slightly).",
        f"Ours is not retrained: its train s and epochs are what {Path(args.ours).name}/metrics.json recorded "
        f"(its own run, possibly another machine); trained on the same manifest: {ours_info['same_manifest']}.",
        f"Latency: median and p95 of {args.latency_runs} single-image calls of `model(x, training=False)` "
        "wrapped in one `tf.function` (10 warm-up calls first, output copied to NumPy). Throughput: "
        f"64 x 1000 / mean ms of {args.throughput_runs} calls on a batch of 64 test images (2 warm-up calls first).",
        f"CPU, TensorFlow {env['tensorflow']} / Keras {env['keras']}, default TF thread pools, not limited "
        f"(intra-op {env['tf_intra_op_threads']}, inter-op {env['tf_inter_op_threads']}; 0 = TF's default, "
        f"one per core) on {env['cpu_cores_available']} available cores. .keras MB = 10^6 bytes, saved without "
        "optimizer state.",
    ]
