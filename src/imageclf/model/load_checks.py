"""The checks a model folder passes before it serves, so a broken folder fails at start with one line.

:func:`read_labels` reads labels.json against config.json's labels. Then three checks of the model,
none of which needs more than what it checks:

- :func:`check_archive`: ``model.keras`` read as a zip, without Keras or TensorFlow: its input side
  against config.json's ``input_size`` and the layers the checks read (``feature_layer``) present.
  The Space serves the optimised graph (pinned by sha256 in config.json) and loads Keras only for
  Grad-CAM, so these facts are read from the archive's own ``config.json`` at start.
- :func:`check_engine`: one probe pass through the engine that serves (OpenVINO or Keras): one
  probability row per class, softmax probabilities, and every check's feature width.
- :func:`check_keras`: the loaded Keras model's input shape and one probe prediction, run wherever
  Keras is loaded (at start when it serves, on the first Grad-CAM otherwise), so Grad-CAM never
  explains a model that disagrees with the folder's config.

Example:
    >>> check_archive(Path("hub_model/model.keras"), (224, 224), layers=("features",))
    >>> check_engine(predictor.engine, (224, 224), classes=3)
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from imageclf.core.engine import FieldEngine
from imageclf.errors import ModelError, first_line
from imageclf.model.config import ConfigError, read_json
from imageclf.model.feature_check import FeatureOODError
from imageclf.model.safety import UnsafeModelError, archive_config
from imageclf.model.tissue_gate import TissueGateError

__all__ = ["ModelFolderError", "check_archive", "check_engine", "check_keras", "read_json_file", "read_labels"]


class ModelFolderError(ModelError, RuntimeError):
    """The model folder breaks the contract (files, labels, input size, outputs)."""


def check_archive(path: Path, input_size: tuple[int, int], *, layers: dict[str, str]) -> None:
    """``model.keras``'s input side and named layers, from its archive alone (``layers``: config.json
    block -> the layer it reads). An archive without a readable config is left to the safety check,
    which runs first and names it."""
    try:
        config = archive_config(path).get("config") or {}
    except (UnsafeModelError, AttributeError):
        return
    top = [layer for layer in config.get("layers") or [] if isinstance(layer, dict)]
    names = {str((layer.get("config") or {}).get("name", layer.get("name"))) for layer in top}
    for block, layer in layers.items():
        if layer not in names:   # the message Keras's get_layer gives, for the same folder either way
            raise ModelFolderError(f"config.json '{block}' cannot be used: No such layer: {layer}.")
    shapes = [(layer.get("config") or {}).get("batch_shape") for layer in top if layer.get("class_name") == "InputLayer"]
    if len(shapes) == 1 and isinstance(shapes[0], list):
        _check_input_shape(tuple(shapes[0]), input_size)


def check_engine(engine: FieldEngine, input_size: tuple[int, int], *, classes: int) -> None:
    """One probe pass through the served engine: its outputs, and the checks' feature widths. It also
    compiles the pass, so the first real request is not slow."""
    try:
        outputs = engine.run(np.zeros((1, *input_size, 3), dtype=np.uint8))
    except FeatureOODError as err:
        raise ModelFolderError(f"config.json 'feature_ood': {err}") from None
    except TissueGateError as err:
        raise ModelFolderError(f"config.json 'tissue_gate': {err}") from None
    except (RuntimeError, ValueError) as err:   # a graph that does not take the config's input size
        raise ModelFolderError(f"The served model does not take a {input_size} input: {first_line(err)}") from None
    _check_probe(np.asarray(outputs.probabilities), classes)


def check_keras(model: Any, input_size: tuple[int, int], *, classes: int) -> None:
    """The loaded Keras model against the folder's config: input shape and one probe prediction."""
    _check_input_shape(tuple(model.input_shape), input_size)
    _check_probe(np.asarray(model.predict_on_batch(np.zeros((1, *input_size, 3), dtype=np.uint8))), classes)


def _check_input_shape(shape: Sequence[Any], input_size: tuple[int, int]) -> None:
    # A wrong input size would silently give garbage; fail at start instead.
    if len(shape) != 4 or shape[-1] != 3:
        raise ModelFolderError(f"Model input shape {tuple(shape)} is not (batch, H, W, 3).")
    if None not in shape[1:3] and tuple(shape[1:3]) != tuple(input_size):
        raise ModelFolderError(f"Model input {tuple(shape[1:3])} differs from config input_size {list(input_size)}.")


def _check_probe(probe: np.ndarray, classes: int) -> None:
    if probe.shape != (1, classes):
        raise ModelFolderError(f"Model outputs shape {probe.shape[1:]}, labels.json has {classes} classes.")
    if not np.isclose(probe.sum(), 1.0, atol=1e-3) or (probe < 0).any():
        raise ModelFolderError("Model outputs are not softmax probabilities (they do not sum to 1).")


def read_json_file(path: Path) -> dict[str, Any]:
    try:
        return read_json(path)
    except ConfigError as err:
        raise ModelFolderError(str(err)) from None


def read_labels(path: Path, expected: list[str]) -> tuple[list[str], list[str]]:
    """labels.json -> (class ids, human names), ordered by output index."""
    raw = read_json_file(path)
    try:
        indexed = sorted((int(key), value) for key, value in raw.items())
    except ValueError:
        raise ModelFolderError(f"{path} keys must be output indices 0..n-1.") from None
    if [index for index, _ in indexed] != list(range(len(indexed))) or not indexed:
        raise ModelFolderError(f"{path} keys must be output indices 0..n-1.")
    ids: list[str] = []
    names: list[str] = []
    for index, value in indexed:
        if isinstance(value, str):  # tolerate {"0": "class_a"}: the id doubles as the name
            value = {"id": value}
        if not isinstance(value, dict) or not value.get("id"):
            raise ModelFolderError(f"{path} entry {index} needs an 'id'.")
        ids.append(str(value["id"]))
        names.append(str(value.get("name") or value["id"]))
    if len(set(ids)) != len(ids) or len(set(names)) != len(names):
        raise ModelFolderError(f"{path} has duplicate class ids or names.")
    if list(expected) != ids:
        raise ModelFolderError(f"config.json labels {expected} disagree with labels.json {ids}.")
    return ids, names
