"""Benchmark our model against re-implemented peer architectures on the same grouped split.

Usage:
    python -m training.evaluation.compare_peers --data ../shared/data/lc25000-lung-224 \
        --manifest training/splits/lc25000-lung-grouped.csv --ours hub_model \
        --peers a,b --budget-minutes 30 --cache-dir .cache --out runs/benchmark

The story, step by step:
1. Read the split manifest (optionally a few images per class and split, for tiny runs).
2. Decode train/val/test once with the project's own loader.
3. Ours: load ``model.keras`` from the exported folder; evaluate it on the test split now.
4. Each peer: Adam on train, same augmentation, a wall-clock budget; best val epoch; test once.
5. Measure every model the same way: parameters, file size, latency, throughput.
6. Report a Markdown table with ratios to ours; write benchmark.json and benchmark.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow's import, which reads it

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from imageclf.model.config import read_config  # noqa: E402
from training.data.batches import make_dataset  # noqa: E402
from training.data.catalog import DEFAULT_DATA  # noqa: E402
from training.data.samples import leaked_groups, load_split, manifest_sha256, read_manifest  # noqa: E402
from training.evaluation.evaluate import classification_metrics  # noqa: E402
from training.evaluation.peer_report import add_ratios, markdown, method_notes  # noqa: E402
from training.models.architectures import inference_copy  # noqa: E402
from training.models.peers import PEERS, build_peer  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MANIFEST = REPO_ROOT / "training" / "splits" / "lc25000-lung-grouped.csv"


class TimeBudget(keras.callbacks.Callback):
    """Stop ``fit`` once ``seconds`` of wall clock have passed since training began.

    Checked every ``check_every`` batches (and at each epoch end), so training stops on
    time even in the middle of a long epoch. Keras still validates that partial epoch,
    so its weights can compete for the best-validation checkpoint.
    """

    def __init__(self, seconds: float, *, check_every: int = 1, clock=time.monotonic):
        super().__init__()
        self.seconds, self.check_every, self.clock = seconds, max(1, check_every), clock
        self.batches, self.stopped = 0, False

    def on_train_begin(self, logs=None):
        self.started, self.batches, self.stopped = self.clock(), 0, False

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        if self.batches % self.check_every == 0:
            self._check()

    def on_epoch_end(self, epoch, logs=None):
        self._check()

    def _check(self) -> None:
        if self.clock() - self.started >= self.seconds:
            self.model.stop_training = self.stopped = True


# Step 1: the split ------------------------------------------------------------------------------

def read_split(manifest: Path, *, limit_per_split: int | None, seed: int) -> dict[str, list]:
    """Manifest rows per split, in manifest order (so ``--cache-dir`` files from training match)."""

    samples = read_manifest(manifest)
    if leaked_groups(samples):
        raise SystemExit(f"{manifest} puts a group in more than one split; refusing to benchmark on it")
    if limit_per_split:
        rng = random.Random(seed)  # a seeded draw per class, not the first N names
        keep = set()
        for key in sorted({(s.split, s.label) for s in samples}):
            rows = [s.path for s in samples if (s.split, s.label) == key]
            keep.update(rng.sample(rows, min(limit_per_split, len(rows))))
        samples = [s for s in samples if s.path in keep]
    return {name: [s for s in samples if s.split == name] for name in ("train", "val", "test")}


# Step 3: our model, evaluated now -----------------------------------------------------------------

def load_ours(folder: Path, *, input_size: int, manifest: Path) -> tuple[keras.Model, dict]:
    """Our exported model and what its folder records (labels, training time, manifest hash)."""

    config = read_config(folder)
    if list(config.input_size) != [input_size, input_size]:
        side = config.input_size[0]
        raise SystemExit(f"{folder}/model.keras takes {side} px tiles; run with --input-size {side}")
    recorded = json.loads((folder / "metrics.json").read_text()) if (folder / "metrics.json").is_file() else {}
    info = {
        "labels": config.labels, "benign_classes": tuple(config.benign_classes),
        "training": recorded.get("training", {}), "recorded_accuracy": recorded.get("accuracy"),
        "same_manifest": config.training_manifest_sha256 == manifest_sha256(manifest),
    }
    return keras.saving.load_model(folder / "model.keras", compile=False, safe_mode=True), info


# Step 4: a peer, trained under the budget -------------------------------------------------------

def train_peer(key: str, datasets: tuple, *, class_ids: list[str], train_size: int, args,
               workdir: Path) -> tuple[keras.Model, dict]:
    """Fit peer ``key`` on (train, val) datasets under the time budget; keep the best-val-loss weights."""

    train_ds, val_ds = datasets
    keras.utils.set_random_seed(args.seed)
    model = build_peer(key, num_classes=len(class_ids), input_size=args.input_size)
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    checkpoint = workdir / f"peer_{key}.best.weights.h5"
    budget = TimeBudget(args.budget_minutes * 60, check_every=args.check_every)
    saver = keras.callbacks.ModelCheckpoint(checkpoint, monitor="val_loss", save_best_only=True,
                                            save_weights_only=True)
    started = time.monotonic()
    history = model.fit(train_ds, validation_data=val_ds, epochs=args.max_epochs, callbacks=[saver, budget],
                        shuffle=False, verbose=args.verbose).history  # the tf.data pipeline shuffles
    seconds = time.monotonic() - started
    if checkpoint.is_file():  # absent only if every val_loss was NaN: keep the last weights then
        model.load_weights(checkpoint)
        checkpoint.unlink()
    val_loss = np.array(history.get("val_loss", []), dtype=float)
    per_epoch = int(np.ceil(train_size / args.batch_size))
    return model, {
        "train_seconds": seconds, "epochs_run": len(val_loss), "epochs_trained": round(budget.batches / per_epoch, 2),
        "best_epoch": int(np.nanargmin(val_loss)) + 1 if np.isfinite(val_loss).any() else None,
        "stopped_by_budget": budget.stopped, "train_batches": budget.batches,
    }


# Step 5: the same measurements for every model ---------------------------------------------------

def timed_calls_ms(forward, x: np.ndarray, *, runs: int, warmup: int) -> np.ndarray:
    """Milliseconds of each of ``runs`` calls on ``x`` (output copied back to NumPy), after warm-up."""
    for _ in range(warmup):
        forward(x).numpy()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        forward(x).numpy()
        times.append((time.perf_counter() - start) * 1000)
    return np.array(times)


def measure(model: keras.Model, test: tuple, *, class_ids, benign, keras_file: Path, args) -> dict:
    """Test metrics, size and speed of one model, measured identically for all."""

    images, labels = test
    metrics = classification_metrics(labels, model.predict(images, batch_size=64, verbose=0),
                                      class_ids=class_ids, benign_classes=benign)
    # One tf.function for both batch sizes: what is timed is the model, not Python dispatch.
    spec = tf.TensorSpec((None, args.input_size, args.input_size, 3), tf.uint8)
    forward = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    single = timed_calls_ms(forward, np.asarray(images[:1]), runs=args.latency_runs, warmup=10)
    batch = np.resize(np.asarray(images), (64, *images.shape[1:]))  # repeats test images if fewer than 64
    batched = timed_calls_ms(forward, batch, runs=args.throughput_runs, warmup=2)
    return {
        "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
        "cancer_sensitivity": metrics.get("cancer_sensitivity"), "params": int(model.count_params()),
        "file_mb": keras_file.stat().st_size / 1e6, "latency_ms_median": float(np.median(single)),
        "latency_ms_p95": float(np.percentile(single, 95)), "throughput_ips": 64 * 1000 / float(np.mean(batched)),
    }


# Step 6: the report (its wording: training.evaluation.peer_report) ---------------------------------

def environment() -> dict:
    """Versions, platform and thread pools the measurements ran under."""
    return {
        "tensorflow": tf.__version__, "keras": keras.__version__, "platform": platform.platform(),
        "cpu_cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        # 0 means TF's default: one thread per available core; we deliberately do not change it.
        "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
    }


def run(args) -> dict:
    """Steps 1-6; returns the report that is also written to ``args.out``."""

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest, ours_dir = Path(args.manifest), Path(args.ours)
    ours_model, ours_info = load_ours(ours_dir, input_size=args.input_size, manifest=manifest)
    class_ids, size = ours_info["labels"], (args.input_size, args.input_size)

    # Steps 1-2: the same split, decoded once, for every model.
    split = read_split(manifest, limit_per_split=args.limit_per_split, seed=args.seed)
    arrays = {name: load_split(args.data, rows, class_ids=class_ids, size=size, cache_dir=args.cache_dir)
              for name, rows in split.items()}
    print("split: " + ", ".join(f"{k} {len(v)}" for k, v in split.items()), flush=True)

    # Step 3: ours is measured, not retrained; its training time is what its folder recorded.
    measure_kw = dict(class_ids=class_ids, benign=ours_info["benign_classes"], args=args)
    recorded = ours_info["training"]
    rows = [{"name": f"ours ({ours_dir.name})", "kind": "ours", "train_seconds": recorded.get("train_seconds"),
             "epochs_run": recorded.get("epochs_run"), "recorded_accuracy": ours_info["recorded_accuracy"],
             **measure(ours_model, arrays["test"], keras_file=ours_dir / "model.keras", **measure_kw)}]
    del ours_model

    # Steps 4-5: each peer trained under the same budget, then measured like ours.

    # Built once and shared: one pipeline (shuffle + augmentation) for every peer, one copy of the images.
    datasets = (make_dataset(*arrays["train"], batch_size=args.batch_size, training=True, seed=args.seed),
                make_dataset(*arrays["val"], batch_size=64, training=False))

    with tempfile.TemporaryDirectory() as tmp:
        workdir = out / "models" if args.keep_models else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for key in args.peers:
            print(f"training peer {key} for at most {args.budget_minutes} min / {args.max_epochs} epochs", flush=True)
            model, training = train_peer(key, datasets, class_ids=class_ids, train_size=len(split["train"]),
                                         args=args, workdir=workdir)
            keras_file = workdir / f"peer_{key}.keras"
            inference_copy(model).save(keras_file)  # without optimizer state, like ours
            rows.append({"name": f"peer {key}", "kind": "peer", "description": PEERS[key][1], **training,
                         **measure(model, arrays["test"], keras_file=keras_file, **measure_kw)})
            keras.backend.clear_session()

    # Step 6: ratios, table, files.
    add_ratios(rows)
    env = environment()
    notes = method_notes(args, env=env, split=split, ours_info=ours_info)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    report = {"settings": settings, "environment": env, "split_sizes": {k: len(v) for k, v in split.items()},
              "models": rows, "notes": notes}
    text = markdown(rows, notes)
    (out / "benchmark.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    (out / "benchmark.md").write_text("# Benchmark: ours vs re-implemented peers\n\n" + text)
    print(text, flush=True)
    return report


def peer_keys(text: str) -> list[str]:
    """Parse `--peers a,b` into known peer keys (argparse type)."""

    keys = [k.strip() for k in text.split(",") if k.strip()]
    if not keys or set(keys) - set(PEERS):
        raise argparse.ArgumentTypeError(f"{text!r}: choose from {sorted(PEERS)}, comma-separated")
    return keys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="dataset root with one folder per class")
    parser.add_argument("--manifest", default=str(DEFAULT_MANIFEST), help="split manifest CSV (the grouped split)")
    parser.add_argument("--ours", default="hub_model", help="our exported model folder (model.keras, config.json)")
    parser.add_argument("--peers", default="a,b", type=peer_keys, help="comma-separated keys of training.models.peers.PEERS")
    parser.add_argument("--budget-minutes", type=float, default=30.0, help="wall-clock training budget per peer")
    parser.add_argument("--max-epochs", type=int, default=50)
    parser.add_argument("--check-every", type=int, default=1, help="check the budget every N batches")
    parser.add_argument("--batch-size", type=int, default=32, help="training batch size (ours used 32)")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam learning rate for the peers")
    parser.add_argument("--input-size", type=int, default=224, help="side of the uint8 tiles (must match ours)")
    parser.add_argument("--limit-per-split", type=int, help="keep N images per class in each split (tiny runs)")
    parser.add_argument("--latency-runs", type=int, default=200, help="single-image calls timed per model")
    parser.add_argument("--throughput-runs", type=int, default=10, help="batch-64 calls timed per model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", help="decoded-image cache (.npy), e.g. the .cache that `make train` fills")
    parser.add_argument("--keep-models", action="store_true", help="keep the peers' .keras files in OUT/models")
    parser.add_argument("--out", default="runs/benchmark", help="folder for benchmark.json and benchmark.md")
    parser.add_argument("--verbose", type=int, default=2, choices=[0, 1, 2], help="Keras fit progress")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
