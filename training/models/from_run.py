"""Instead of training: reuse the model of an earlier run folder (``--from-run``) to recalibrate or re-export.

:func:`reuse_run` takes the run's model (without its temperature), curves and provenance;
:func:`carry_feature_check` brings along the feature-space check a transfer run fitted.

Example:
    >>> model, history, training, provenance = reuse_run("runs/lung-v1", out=Path("hub_model"))
    >>> provenance["code_version"]          # the code that trained it, not the code re-exporting it
    >>> extras = carry_feature_check("runs/lung-v1", out=Path("hub_model"))   # {} when it has none
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import keras

from training.models.architectures import logits_model, model_input
from training.runtime.provenance import code_version


def reuse_run(folder: str | Path, *, out: Path):
    """Instead of step 4: take the trained model of an earlier run folder (to recalibrate or re-export).

    The model is used without its calibration layer so that the temperature is fitted afresh;
    its training curves and provenance (code version, training settings) are carried over.
    """

    folder = Path(folder)
    model = keras.saving.load_model(folder / "model.keras", compile=False, safe_mode=True)
    probabilities = keras.layers.Softmax(name="probabilities")(logits_model(model).output)
    model = keras.Model(model_input(model), probabilities, name=model.name)
    history_file = folder / "history.json"
    history = json.loads(history_file.read_text()) if history_file.is_file() else {}
    curves = folder / "training_curves.png"
    if curves.is_file() and curves.resolve() != (out / curves.name).resolve():
        shutil.copyfile(curves, out / curves.name)
    recorded = json.loads((folder / "metrics.json").read_text())
    training = recorded.get("training") or {}
    if "train_wall_s" in recorded:  # a transfer run (training/transfer/pipeline.py) records its wall time itself
        training["train_seconds"] = round(float(recorded["train_wall_s"]), 1)
    training["reused_from"] = str(folder)
    source = json.loads((folder / "config.json").read_text())

    provenance = {"code_version": source.get("code_version") or code_version(), "training_run": source["training_run"]}
    if source.get("stain"):   # the run's features were of normalised tiles: the stain step is part of this model
        provenance["stain"] = source["stain"]
    if recorded.get("temperature_fitted_on"):  # the run fitted its own temperature on validation data: keep it
        provenance["temperature"] = float(recorded["temperature"])
    return model, history, training, provenance


def carry_feature_check(run: str | Path, *, out: Path) -> dict:
    """Copy an earlier run's ``feature_ood.npz`` into ``out``; its config.json block, sha256-pinned."""

    run = Path(run)
    params, info_file = run / "feature_ood.npz", run / "feature_ood.json"
    if not params.is_file() or not info_file.is_file():
        return {}
    if params.resolve() != (out / params.name).resolve():
        shutil.copyfile(params, out / params.name)
    info = json.loads(info_file.read_text())
    return {"feature_ood": {
        "method": info["method"], "feature_layer": info.get("feature_layer", "features"),
        "params_file": params.name, "params_sha256": hashlib.sha256(params.read_bytes()).hexdigest(),
        "threshold": float(info["threshold"]), "fitted_on": info.get("fitted_on"), "dims": info.get("dims")}}


def carry_tissue_gate(run: str | Path, *, out: Path) -> dict:
    """Copy an earlier run's tissue gate (its config.json block and the parameters file it pins) into ``out``."""
    run = Path(run)
    block = json.loads((run / "config.json").read_text()).get("tissue_gate")
    if not block:
        return {}
    params = run / block["params_file"]
    if hashlib.sha256(params.read_bytes()).hexdigest() != block["params_sha256"]:
        raise ValueError(f"{params} does not match the sha256 its run's config.json pins.")
    if params.resolve() != (out / params.name).resolve():
        shutil.copyfile(params, out / params.name)
    return {"tissue_gate": block}
