"""Train a classifier on a grouped split and export the Hub model folder.

Usage:
    python -m training.train --data ../shared/data/lc25000-lung-224 \
        --manifest training/splits/lc25000-lung-grouped.csv --out hub_model
    # any class-per-folder dataset, also one that comes split (train/valid/test), N classes or 2:
    python -m training.train --data ../shared/data/chest-ct --out runs/ct \
        --class-map adenocarcinoma=cancer,large_cell_carcinoma=cancer,squamous_cell_carcinoma=cancer

The story, step by step:
1. Index the dataset and split it by group, or use its own split folders (``training.data.splits``),
   or reuse the committed manifest.
2. Decode every image once into memory (optionally cached on disk).
3. Stream batches through ``tf.data`` with augmentation suited to the dataset (``DatasetInfo``).
4. Train, on one device or several workers (``--strategy``, ``training.runtime.devices``); keep the
   weights of the best validation epoch (or reuse a run: ``--from-run``).
5. Calibrate (temperature) and fit the abstention rule on the validation split.
6. Evaluate once on the test split: accuracy, calibration, abstention, far-OOD rejection.
7. Export model, labels, config, metrics, plots and model card (``training.export.hub_folder``);
   optionally log the run to MLflow (``--mlflow``, ``training.runtime.tracking``).
"""
from __future__ import annotations

import argparse
import functools
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from imageclf.core.stain import tiles_as_model_input
from imageclf.model.config_blocks import parse_block
from training.calibration.scale_reference import build_scale_spec, tiles_by_class
from training.data.batches import make_dataset
from training.data.catalog import DEFAULT_DATA, describe
from training.data.samples import load_split
from training.data.splits import describe_split, layout_of, parse_class_map, prepare_split
from training.evaluation.fit_and_measure import calibrate_and_evaluate
from training.export.hub_folder import export_model_folder
from training.models.architectures import build_model
from training.models.from_run import carry_feature_check, carry_tissue_gate, reuse_run
from training.runtime.devices import (STRATEGIES, fit_multi_worker_ready, global_batch_size, is_chief, make_strategy,
                                      output_folder)
from training.runtime.provenance import CheckedVersion, checked_code_version
from training.runtime.tracking import start_tracking, tracking_requested


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
    augmentation: dict = field(default_factory=dict)  # overrides of training.data.augment.Augmentation
    verbose: int = 1
    from_run: str | None = None  # skip fitting: reuse the model of this run folder
    class_map: dict[str, str] = field(default_factory=dict)  # folder -> class, e.g. merge carcinomas
    val_fraction: float = 0.15  # share carved for validation when the dataset brings none
    strategy: str = "default"  # tf.distribute: default, mirrored or multi_worker (training.runtime.devices)
    mlflow: bool = False  # log to MLflow (also when MLFLOW_TRACKING_URI is set)
    mlflow_experiment: str | None = None  # default: the model name
    allow_dirty: bool = False  # export from uncommitted training code (recorded); else refused at the start


# Steps 2-7 -----------------------------------------------------------------------------------


def train(config: TrainConfig) -> dict:
    """Run the whole story and return the test metrics (also written to ``config.out``).

    Under ``--strategy multi_worker`` every worker trains; only the chief calibrates, evaluates,
    exports and tracks. The other workers return ``{"training": ...}`` and leave no files behind.
    """

    # Before any work: an export from uncommitted code is refused now, not after an hour of training.
    checked = checked_code_version(allow_dirty=config.allow_dirty)
    strategy = make_strategy(config.strategy)  # a multi-worker strategy must precede any TF op
    chief = is_chief(strategy)
    info = describe(config.data)
    # The dataset's own augmentation defaults (e.g. no stain jitter on CT), then --augment overrides.
    config = replace(config, augmentation={**info.augmentation, **config.augmentation})
    with output_folder(config.out, chief=chief) as out:
        params = {k: v for k, v in asdict(config).items() if k not in ("verbose", "mlflow", "mlflow_experiment")}
        tracker = start_tracking(requested=chief and tracking_requested(config.mlflow), params=params,
                                 experiment=config.mlflow_experiment or config.model_name, run_name=out.name)
        try:
            metrics = run_steps(config, info, out=out, strategy=strategy, chief=chief, callbacks=tracker.callbacks(),
                                checked=checked)
        except BaseException:
            tracker.fail()
            raise
        tracker.finish(metrics, folder=out)
    return metrics


def run_steps(config: TrainConfig, info, *, out: Path, strategy, chief: bool, callbacks: list,
              checked: CheckedVersion) -> dict:
    """Steps 1-7 (see the module docstring) in ``out``; ``checked``: the code version taken at the start."""

    keras.utils.set_random_seed(config.seed)
    code = checked.code_version  # taken at the start: the code that actually trained the model
    samples, manifest = prepare_split(config, out=out, chief=chief)  # step 1
    class_ids = sorted({s.label for s in samples})
    size = (config.input_size, config.input_size)

    started = time.monotonic()
    split = {name: [s for s in samples if s.split == name] for name in ("train", "val", "test")}
    arrays = {
        name: load_split(config.data, rows, class_ids=class_ids, size=size, cache_dir=config.cache_dir)
        for name, rows in split.items()
    }
    print(f"decoded {sum(len(r) for r in split.values())} images in {time.monotonic() - started:.0f}s "
          f"(train {len(split['train'])}, val {len(split['val'])}, test {len(split['test'])})\n"
          f"{describe_split(samples)}", flush=True)

    provenance = {}
    if config.from_run:
        model, history, training, provenance = reuse_run(config.from_run, out=out)
        code = provenance.pop("code_version")
    else:
        model, history, training = fit(config, arrays, num_classes=len(class_ids), out=out, strategy=strategy,
                                       callbacks=callbacks)
    training["split_sizes"] = {name: len(rows) for name, rows in split.items()}
    if not chief:  # the chief alone evaluates and exports
        return {"training": training}

    # Steps 5-6: calibrate and fit abstention on validation, then measure everything on test once.
    stain = parse_block("stain", provenance.get("stain"))   # None: the model takes the pixels as they are
    model, metrics, extras = calibrate_and_evaluate(model, arrays, class_ids=class_ids, info=info, out=out,
                                                    data_root=config.data,
                                                    test_groups=[s.group for s in split["test"]],
                                                    temperature=provenance.pop("temperature", None),
                                                    prepare=functools.partial(tiles_as_model_input, spec=stain))
    metrics["training"] = training
    extras["data_layout"] = layout_of(config.data).to_dict()
    if config.from_run:  # a transfer run (training/transfer/pipeline.py) brings its fitted feature-space check
        extras.update(carry_feature_check(config.from_run, out=out))
        extras.update(carry_tissue_gate(config.from_run, out=out))
    if info.unit == "tile" and info.field_of_view_px:  # step 7: the physical scale the model learned
        extras["scale"] = build_scale_spec(tiles_by_class(split["train"], root=config.data),
                                           field_of_view_px=info.field_of_view_px, seed=config.seed)
    export_model_folder(model, out, config=config, class_ids=class_ids, info=info, metrics=metrics,
                        history=history, manifest=manifest, code=code, extras={**extras, **provenance},
                        dirty_tree_allowed=checked.dirty_tree_allowed)
    return metrics


def fit(config: TrainConfig, arrays: dict, *, num_classes: int, out: Path, strategy=None, callbacks=()):
    """Step 4: train with AdamW + cosine decay; keep the best validation epoch's weights.

    The model is built and compiled inside ``strategy.scope()`` (the default strategy: one
    device); ``config.batch_size`` is per replica. The returned model lives on this device only,
    so what follows (calibration, evaluation, export) needs no other worker.
    """

    strategy = strategy or tf.distribute.get_strategy()
    batch_size = global_batch_size(config.batch_size, strategy)
    train_ds = make_dataset(*arrays["train"], batch_size=batch_size, training=True, seed=config.seed,
                            augmentation=config.augmentation)
    val_ds = make_dataset(*arrays["val"], batch_size=64, training=False)

    def new_model() -> keras.Model:
        return build_model(num_classes=num_classes, input_size=(config.input_size, config.input_size),
                           work_size=config.work_size, backbone=config.backbone,
                           backbone_weights=config.backbone_weights, widths=tuple(config.widths),
                           name=config.model_name.replace("-", "_"))

    steps = config.epochs * int(np.ceil(len(arrays["train"][1]) / batch_size))
    with strategy.scope():
        model = new_model()
        schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=max(steps, 1),
                                                          alpha=0.02)
        model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    fit_multi_worker_ready(model, strategy)
    checkpoint = out / ".best.weights.h5"
    callbacks = [
        keras.callbacks.ModelCheckpoint(checkpoint, monitor="val_loss", save_best_only=True, save_weights_only=True),
        # Not before half-way: with cosine decay the best epochs come late, and early
        # high-learning-rate validation losses are noisy.
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience,
                                      start_from_epoch=config.epochs // 2),
        *callbacks,
    ]
    started = time.monotonic()
    history = model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, callbacks=callbacks,
                        verbose=config.verbose).history
    train_seconds = time.monotonic() - started
    if strategy is not tf.distribute.get_strategy():  # leave the distributed variables behind
        model = new_model()
    model.load_weights(checkpoint)
    checkpoint.unlink()
    best = int(np.argmin(history["val_loss"]))
    training = {
        "epochs_run": len(history["val_loss"]),
        "best_epoch": best + 1,
        "best_val_loss": round(float(history["val_loss"][best]), 4),
        "best_val_accuracy": round(float(history["val_accuracy"][best]), 4),
        "train_seconds": round(train_seconds, 1),
        "strategy": config.strategy,
        "replicas": int(strategy.num_replicas_in_sync),
        "global_batch_size": batch_size,
    }
    return model, history, training


def _backbone_weights(value: str) -> str:
    if value == "imagenet" or Path(value).is_file():
        return value
    raise argparse.ArgumentTypeError(f"{value!r} is neither 'imagenet' nor an existing weights file")


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=defaults.data,
                        help="dataset root: one folder per class, or train/[valid|val]/test folders of them")
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
    parser.add_argument("--backbone", choices=["densenet121", "efficientnetb0", "convnext_tiny", "mobilenetv3small"],
                        help="an ImageNet architecture instead of the compact CNN (default: none)")
    parser.add_argument("--backbone-weights", type=_backbone_weights,
                        help="'imagenet' (Keras' own download, needs internet) or a .weights.h5 file, e.g. from "
                             "'python -m training.models.backbone_weights' (offline); default: from scratch")
    parser.add_argument("--cache-dir", help="keep decoded images here as .npy between runs")
    parser.add_argument("--model-name", default=defaults.model_name)
    parser.add_argument("--widths", type=lambda v: tuple(int(w) for w in v.split(",")), default=defaults.widths,
                        help="channels of the compact CNN's stages, e.g. 32,64,128,192")
    parser.add_argument("--augment", action="append", default=[], metavar="NAME=VALUE",
                        help="override one augmentation setting, e.g. hed_jitter=0 (see training/data/augment.py)")
    parser.add_argument("--from-run", help="skip training: recalibrate and re-export the model in this folder")
    parser.add_argument("--class-map", default="", metavar="FOLDER=CLASS,...|FILE.json",
                        help="merge or rename class folders, e.g. adenocarcinoma=cancer,squamous_cell_carcinoma=cancer")
    parser.add_argument("--val-fraction", type=float, default=defaults.val_fraction,
                        help="share of train carved for validation when the dataset has no valid/ folder")
    parser.add_argument("--strategy", choices=STRATEGIES, default=defaults.strategy,
                        help="tf.distribute: default (one device), mirrored (local devices), "
                             "multi_worker (reads TF_CONFIG); --batch-size is per replica")
    parser.add_argument("--mlflow", action="store_true",
                        help="log params, epochs, test metrics and the model folder to MLflow "
                             "(also on when MLFLOW_TRACKING_URI is set; default store ./mlruns)")
    parser.add_argument("--mlflow-experiment", help="MLflow experiment name (default: the model name)")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="export even when training/ or src/ has uncommitted changes (else refused); "
                             "recorded as code_version '...+dirty' and training_run.dirty_tree_allowed")
    parser.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2], help="Keras progress: 1 bar, 2 line/epoch")
    args = vars(parser.parse_args(argv))
    args["augmentation"] = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.pop("augment"))}
    args["class_map"] = parse_class_map(args["class_map"])
    return TrainConfig(**args)


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    metrics = train(config)
    print(json.dumps({k: metrics[k] for k in ("accuracy", "macro_f1", "cancer_sensitivity", "training") if k in metrics},
                     indent=2))
    if "accuracy" in metrics:  # a worker other than the chief exports nothing
        print(f"exported to {config.out}; config: {json.dumps(asdict(config))}")


if __name__ == "__main__":
    main()
