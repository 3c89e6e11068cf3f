"""Train a classifier on a grouped split and export the Hub model folder.

Usage:
    python -m training.train --data ../shared/data/lc25000-lung-224 \
        --manifest training/splits/lc25000-lung-grouped.csv --out hub_model

The story, step by step:
1. Index the dataset and split it by group (or reuse the committed manifest).
2. Decode every image once into memory (optionally cached on disk).
3. Stream batches through ``tf.data`` with histology-safe augmentation.
4. Train; keep the weights of the best validation epoch (or reuse a run: ``--from-run``).
5. Calibrate (temperature) and fit the abstention rule on the validation split.
6. Evaluate once on the test split: accuracy, calibration, abstention, far-OOD rejection.
7. Export model, labels, config, metrics, plots and model card (``training.export``).
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from training.datasets import DEFAULT_DATA


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved into config.json for provenance."""

    data: str = str(DEFAULT_DATA)
    out: str = "hub_model"
    manifest: str | None = None  # read if it exists, else written after splitting
    split_mode: str = "grouped"  # "random" ignores groups: leaky, for comparison with papers only
    input_size: int = 224
    work_size: int | None = 128
    epochs: int = 16
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 5
    seed: int = 0
    backbone: str | None = None
    backbone_weights: str | None = None
    cache_dir: str | None = None
    model_name: str = "histology-classifier"
    widths: tuple[int, ...] = (32, 64, 128, 192)
    augmentation: dict = field(default_factory=dict)  # overrides of training.augment.Augmentation
    verbose: int = 1
    from_run: str | None = None  # skip fitting: reuse the model of this run folder


# Step 1: the split -------------------------------------------------------------------------


def prepare_split(config: TrainConfig):
    """Load the committed manifest, or make a grouped split and write it."""
    from training.data import grouped_split, index_dataset, leaked_groups, random_split, read_manifest, write_manifest

    manifest = Path(config.manifest) if config.manifest else Path(config.out) / "split_manifest.csv"
    if manifest.is_file():
        samples = read_manifest(manifest)
    else:
        split = random_split if config.split_mode == "random" else grouped_split
        samples = split(index_dataset(config.data), seed=config.seed)
        write_manifest(samples, manifest)
    if config.split_mode == "grouped" and leaked_groups(samples):
        raise ValueError(f"Manifest {manifest} puts a group in more than one split")
    return samples, manifest


# Step 3: the input pipeline -----------------------------------------------------------------


def make_dataset(images, labels, *, batch_size: int, training: bool, seed: int = 0, augmentation: dict | None = None):
    """A ``tf.data`` pipeline over in-memory uint8 images; training batches are augmented."""
    import tensorflow as tf

    from training.augment import Augmentation

    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    if training:
        ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if training:
        ds = ds.map(Augmentation(**(augmentation or {})), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


# Steps 2-7 -----------------------------------------------------------------------------------


def train(config: TrainConfig) -> dict:
    """Run the whole story and return the test metrics (also written to ``config.out``)."""
    import keras

    from training.data import load_split
    from training.datasets import describe
    from training.export import code_version, export_model_folder
    from training.finish import calibrate_and_evaluate

    keras.utils.set_random_seed(config.seed)
    code = code_version()  # at the start: the code that actually trained the model
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    samples, manifest = prepare_split(config)
    class_ids = sorted({s.label for s in samples})
    info = describe(config.data)
    size = (config.input_size, config.input_size)

    started = time.monotonic()
    split = {name: [s for s in samples if s.split == name] for name in ("train", "val", "test")}
    arrays = {
        name: load_split(config.data, rows, class_ids=class_ids, size=size, cache_dir=config.cache_dir)
        for name, rows in split.items()
    }
    print(f"decoded {sum(len(r) for r in split.values())} images in {time.monotonic() - started:.0f}s "
          f"(train {len(split['train'])}, val {len(split['val'])}, test {len(split['test'])})", flush=True)

    provenance = {}
    if config.from_run:
        model, history, training, provenance = reuse_run(config.from_run, out=out)
        code = provenance.pop("code_version")
    else:
        model, history, training = fit(config, arrays, num_classes=len(class_ids), out=out)
    training["split_sizes"] = {name: len(rows) for name, rows in split.items()}

    # Steps 5-6: calibrate and fit abstention on validation, then measure everything on test once.
    model, metrics, extras = calibrate_and_evaluate(model, arrays, class_ids=class_ids, info=info, out=out,
                                                    data_root=config.data,
                                                    test_groups=[s.group for s in split["test"]])
    metrics["training"] = training
    export_model_folder(model, out, config=config, class_ids=class_ids, info=info, metrics=metrics,
                        history=history, manifest=manifest, code=code, extras={**extras, **provenance})
    return metrics


def fit(config: TrainConfig, arrays: dict, *, num_classes: int, out: Path):
    """Step 4: train with AdamW + cosine decay; keep the best validation epoch's weights."""
    import keras
    import numpy as np

    from training.model import build_model

    train_ds = make_dataset(*arrays["train"], batch_size=config.batch_size, training=True, seed=config.seed,
                            augmentation=config.augmentation)
    val_ds = make_dataset(*arrays["val"], batch_size=64, training=False)
    size = (config.input_size, config.input_size)
    model = build_model(
        num_classes=num_classes, input_size=size, work_size=config.work_size,
        backbone=config.backbone, backbone_weights=config.backbone_weights, widths=tuple(config.widths),
        name=config.model_name.replace("-", "_"),
    )
    steps = config.epochs * int(np.ceil(len(arrays["train"][1]) / config.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=max(steps, 1), alpha=0.02)
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    checkpoint = out / ".best.weights.h5"
    callbacks = [
        keras.callbacks.ModelCheckpoint(checkpoint, monitor="val_loss", save_best_only=True, save_weights_only=True),
        # Not before half-way: with cosine decay the best epochs come late, and early
        # high-learning-rate validation losses are noisy.
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience,
                                      start_from_epoch=config.epochs // 2),
    ]
    started = time.monotonic()
    history = model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, callbacks=callbacks,
                        verbose=config.verbose).history
    train_seconds = time.monotonic() - started
    model.load_weights(checkpoint)
    checkpoint.unlink()
    best = int(np.argmin(history["val_loss"]))
    training = {
        "epochs_run": len(history["val_loss"]),
        "best_epoch": best + 1,
        "best_val_loss": round(float(history["val_loss"][best]), 4),
        "best_val_accuracy": round(float(history["val_accuracy"][best]), 4),
        "train_seconds": round(train_seconds, 1),
    }
    return model, history, training


def reuse_run(folder: str | Path, *, out: Path):
    """Instead of step 4: take the trained model of an earlier run folder (to recalibrate or re-export).

    The model is used without its calibration layer so that the temperature is fitted afresh;
    its training curves and provenance (code version, training settings) are carried over.
    """
    import keras

    from training.calibrate import logits_model
    from training.model import model_input

    folder = Path(folder)
    model = keras.saving.load_model(folder / "model.keras", compile=False, safe_mode=True)
    probabilities = keras.layers.Softmax(name="probabilities")(logits_model(model).output)
    model = keras.Model(model_input(model), probabilities, name=model.name)
    history_file = folder / "history.json"
    history = json.loads(history_file.read_text()) if history_file.is_file() else {}
    curves = folder / "training_curves.png"
    if curves.is_file() and curves.resolve() != (out / curves.name).resolve():
        shutil.copyfile(curves, out / curves.name)
    training = json.loads((folder / "metrics.json").read_text()).get("training", {})
    training["reused_from"] = str(folder)
    source = json.loads((folder / "config.json").read_text())
    return model, history, training, {"code_version": source["code_version"], "training_run": source["training_run"]}


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=defaults.data, help="dataset root with one folder per class")
    parser.add_argument("--out", default=defaults.out, help="folder to write the Hub model files into")
    parser.add_argument("--manifest", help="split manifest CSV (read if present, else written)")
    parser.add_argument("--split-mode", choices=["grouped", "random"], default="grouped",
                        help="random = split single tiles, ignoring groups (LEAKY; only to compare with papers)")
    parser.add_argument("--input-size", type=int, default=defaults.input_size, help="side of the uint8 input tile")
    parser.add_argument("--work-size", type=int, default=defaults.work_size, help="side the network runs at")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--patience", type=int, default=defaults.patience)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--backbone", choices=["efficientnetb0", "convnext_tiny", "mobilenetv3small"])
    parser.add_argument("--backbone-weights", choices=["imagenet"], help="needs internet; default: from scratch")
    parser.add_argument("--cache-dir", help="keep decoded images here as .npy between runs")
    parser.add_argument("--model-name", default=defaults.model_name)
    parser.add_argument("--widths", type=lambda v: tuple(int(w) for w in v.split(",")), default=defaults.widths,
                        help="channels of the compact CNN's stages, e.g. 32,64,128,192")
    parser.add_argument("--augment", action="append", default=[], metavar="NAME=VALUE",
                        help="override one augmentation setting, e.g. hed_jitter=0 (see training/augment.py)")
    parser.add_argument("--from-run", help="skip training: recalibrate and re-export the model in this folder")
    parser.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2], help="Keras progress: 1 bar, 2 line/epoch")
    args = vars(parser.parse_args(argv))
    args["augmentation"] = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.pop("augment"))}
    return TrainConfig(**args)


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    metrics = train(config)
    print(json.dumps({k: metrics[k] for k in ("accuracy", "macro_f1", "cancer_sensitivity", "training") if k in metrics},
                     indent=2))
    print(f"exported to {config.out}; config: {json.dumps(asdict(config))}")


if __name__ == "__main__":
    main()
