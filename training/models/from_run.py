"""Instead of training: reuse the model of an earlier run folder (``--from-run``) to recalibrate or re-export.

Example:
    >>> model, history, training, provenance = reuse_run("runs/lung-v1", out=Path("hub_model"))
    >>> provenance["code_version"]          # the code that trained it, not the code re-exporting it
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras

from training.calibration.temperature import logits_model
from training.export.hub_folder import code_version
from training.models.architectures import model_input


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
    if recorded.get("temperature_fitted_on"):  # the run fitted its own temperature on validation data: keep it
        provenance["temperature"] = float(recorded["temperature"])
    return model, history, training, provenance
