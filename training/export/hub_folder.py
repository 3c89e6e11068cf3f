"""Write the Hub model repo's contents: model, label map, config, metrics, plots, card.

Example:
    >>> export_model_folder(model, "hub_model", config=cfg, class_ids=ids, info=info,
    ...                     metrics=metrics, history=history, manifest=manifest_path)
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import keras

from imageclf.model.config import DISCLAIMER, ModelConfig, write_config
from training.data.augment import Augmentation
from training.data.catalog import human_name
from training.data.samples import manifest_sha256
from training.evaluation.evaluate import plot_confusion_matrix, plot_history
from training.export.card import write_model_card
from training.models.architectures import inference_copy
from training.runtime.provenance import code_version


def export_model_folder(model, out, *, config, class_ids, info, metrics, history, manifest, code=None,
                        extras=None, dirty_tree_allowed: bool = False) -> Path:
    """Write every file of the model repo into ``out`` and return its path.

    ``dirty_tree_allowed``: the export was allowed from uncommitted code (``--allow-dirty``); said in
    ``training_run`` beside the ``+dirty`` code version.
    """

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    inference_copy(model).save(out / "model.keras")

    labels = {str(i): {"id": cid, "name": human_name(cid, info)} for i, cid in enumerate(class_ids)}
    (out / "labels.json").write_text(json.dumps(labels, indent=2) + "\n")

    manifest = Path(manifest)
    if manifest.resolve() != (out / "split_manifest.csv").resolve():
        shutil.copyfile(manifest, out / "split_manifest.csv")  # which tiles trained / tested it
    run = {k: v for k, v in asdict(config).items()
           if k not in ("out", "cache_dir", "verbose", "mlflow", "mlflow_experiment", "allow_dirty")}  # not provenance
    run["augmentation"] = Augmentation(**config.augmentation).to_dict()  # the settings in force, not overrides
    run["data"] = Path(config.data).name
    extras = dict(extras or {})  # calibration, the abstention rule, the scale block, feature OOD
    model_config = ModelConfig(
        model_name=config.model_name,
        input_size=(config.input_size, config.input_size),
        input_unit=info.unit,  # "tile": the Space cuts larger images into fields; else it resizes them whole
        labels=list(class_ids),
        benign_classes=list(info.benign_classes),
        domain=info.domain,
        disclaimer=DISCLAIMER,
        dataset=info.title,
        # The dataset's caveats, shown by the Space's "About this model" panel (else generic text).
        limitations=" ".join(f"{info.caveats} {info.source_note}".split()) if info.caveats else None,
        training_manifest="split_manifest.csv",
        training_manifest_sha256=manifest_sha256(manifest),
        code_version=code or code_version(),
        keras_version=keras.__version__,
        # A reused run keeps its own training settings; the dataset is always the one exported from.
        # The flag is recorded only when it let uncommitted code through: clean exports read as before.
        training_run={**extras.pop("training_run", run), "data": run["data"],
                      **({"dirty_tree_allowed": True} if dirty_tree_allowed else {})},
        data_layout=extras.pop("data_layout", None),
        abstain=extras.pop("abstain", None),
        calibration=extras.pop("calibration", None),
        feature_ood=extras.pop("feature_ood", None),
        scale=extras.pop("scale", None),
        stain=extras.pop("stain", None),                  # the run's stain step (training.transfer.pipeline)
        tissue_gate=extras.pop("tissue_gate", None),
    )
    if extras:
        raise ValueError(f"Unknown config fields for export: {sorted(extras)}")
    write_config(out, model_config)
    model_config = model_config.to_dict()  # the card reads the same values
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "confusion_matrix.json").write_text(json.dumps(metrics["confusion_matrix"], indent=2) + "\n")
    plot_confusion_matrix(metrics, out / "confusion_matrix.png")
    if history:  # absent when an earlier run's model is reused; its curves stay in place
        (out / "history.json").write_text(json.dumps({k: [float(v) for v in vs] for k, vs in history.items()}) + "\n")
        plot_history(history, out / "training_curves.png")
    write_model_card(out, config=model_config, labels=labels, metrics=metrics, info=info)
    return out
