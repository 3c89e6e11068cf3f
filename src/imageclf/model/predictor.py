"""A loaded ``hub_model`` folder (model.keras + labels.json + config.json): its spec and its engine.

Framework-free on purpose (no Gradio): the Space, scripts, training and tests share it. Loading
makes two things the serving rule needs, and the rule never calls back into this class:
``spec`` (``imageclf.core.spec.ClassifierSpec``: classes, input, scale block, refusal rule) and
``engine`` (``imageclf.model.openvino_engine.OpenVinoEngine`` when config.json pins an optimised
runtime whose files are present and match, else ``imageclf.model.keras_engine.KerasEngine``, with
one log line saying why), scoring the feature check and the optional tissue gate
(``imageclf.model.tissue_gate``) from the same pass. :meth:`Predictor.analyze` is the rule
(``imageclf.core.rule.analyze``) on one image, for Python callers;
:meth:`Predictor.classify_fields` runs tiles as one field each, resized to the input (what
evaluation measures), through the same field loop (``imageclf.core.pipeline``).

Example:
    >>> predictor = Predictor("hub_model")
    >>> predictor.analyze("lungaca1.jpeg", scale="auto").label
    'lung_aca'
    >>> table = predictor.classify_fields(["tile.jpeg"])      # paths, bytes or RGB arrays, one field each
    >>> table.top, table.codes()
    (array([0]), [None])
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from imageclf import settings as settings_module
from imageclf.core import pipeline, rule
from imageclf.core.field_table import FieldTable
from imageclf.core.imaging import ImageError, decode_image, to_model_input, to_rgb_uint8
from imageclf.core.refusal import AbstainRule, RefusalRule
from imageclf.core.request import DEFAULT_SCALE, Request, make_request
from imageclf.core.scale import ScaleRequest
from imageclf.core.spec import ClassifierSpec
from imageclf.core.verdict import ImageAnalysis
from imageclf.errors import ModelError, first_line
from imageclf.model.config import ConfigError, ModelConfig, read_config, read_json
from imageclf.model.feature_check import FeatureCheck, FeatureOODError
from imageclf.model.keras_engine import KerasEngine
from imageclf.model.openvino_engine import OpenVinoEngine, RuntimeFileError
from imageclf.model.safety import UnsafeModelError, unsafe_parts
from imageclf.model.tissue_gate import TissueGate, TissueGateError
from imageclf.settings import Settings, quiet_tensorflow

quiet_tensorflow()   # before Keras imports TensorFlow
import keras  # noqa: E402

ImageInput = np.ndarray | str | os.PathLike | bytes
log = logging.getLogger(__name__)

__all__ = ["ImageError", "ImageInput", "ModelFolderError", "Predictor"]


class ModelFolderError(ModelError, RuntimeError):
    """The model folder breaks the contract (files, labels, input size, outputs)."""


class Predictor:
    """A loaded model folder: ``spec``, ``engine``, the Keras ``model`` (for Grad-CAM) and metrics.

    Loads ``model.keras`` once (``safe_mode=True``, no compile) and checks it against
    ``config.json`` and ``labels.json`` with one probe prediction, which also warms the
    model up so the first real request is not slow. A model with anything but built-in
    Keras objects (a ``Lambda`` layer, a custom class) is refused before Keras reads it
    (``imageclf.model.safety``). ``settings``: the process's settings (``max_fields``, and
    ``model_runtime``: ``"auto"`` serves the optimised runtime when present, ``"keras"`` never);
    ``runtime`` overrides the latter. ``self.runtime`` names the engine in use.
    """

    def __init__(self, folder: str | os.PathLike, *, settings: Settings | None = None,
                 runtime: str | None = None) -> None:
        self.folder = Path(folder)
        try:
            self.model_config: ModelConfig = read_config(self.folder)
        except ConfigError as err:
            raise ModelFolderError(str(err)) from None
        config = self.model_config
        self.class_ids, self.names = _read_labels(self.folder / "labels.json", config.labels)
        self.input_size: tuple[int, int] = tuple(config.input_size)
        metrics_path = self.folder / "metrics.json"
        self.metrics: dict[str, Any] = _read_json(metrics_path) if metrics_path.is_file() else {}
        model_path = self.folder / "model.keras"
        if not model_path.is_file():
            raise ModelFolderError(f"{model_path} not found.")
        self.model = _load_model(model_path)
        self.feature_check: FeatureCheck | None = None
        self.tissue_gate = _load_tissue_gate(config, self.folder, self.model)
        try:
            if config.feature_ood is not None:
                self.feature_check = FeatureCheck.from_config(config.feature_ood, folder=self.folder)
            self.engine: KerasEngine | OpenVinoEngine = KerasEngine(self.model, self.feature_check, self.tissue_gate)
        except (FeatureOODError, KeyError, ValueError) as err:
            raise ModelFolderError(f"config.json 'feature_ood' cannot be used: {first_line(err)}") from None
        settings = settings or settings_module.SETTINGS
        self.runtime = "keras"
        if (runtime or settings.model_runtime) != "keras" and config.runtime is not None:
            try:
                self.engine = OpenVinoEngine.from_folder(self.folder, config.runtime, self.feature_check,
                                                         tissue_gate=self.tissue_gate)
                self.runtime = f"{config.runtime.format} {config.runtime.precision} ({self.engine.arithmetic})"
            except RuntimeFileError as err:
                log.warning("Serving with Keras, not the optimised runtime: %s.", err)
        self.spec = ClassifierSpec(
            class_ids=tuple(self.class_ids), names=tuple(self.names), input_size=self.input_size,
            input_unit=config.input_unit, scale=config.scale, stain=config.stain, max_fields=settings.max_fields,
            refusal=RefusalRule(abstain=config.abstain or AbstainRule(),
                                feature_threshold=None if self.feature_check is None else self.feature_check.threshold,
                                gate_threshold=None if self.tissue_gate is None else self.tissue_gate.threshold))
        self._check_model()

    @property
    def model_name(self) -> str:
        return self.model_config.model_name or self.folder.name

    @property
    def disclaimer(self) -> str | None:
        return self.model_config.disclaimer or None

    @property
    def domain(self) -> str | None:
        return self.model_config.domain or None

    def request(self, image: ImageInput, scale: str | ScaleRequest | None = DEFAULT_SCALE) -> Request:
        """One typed request from a path, bytes or array and a scale option (parsed here, once)."""
        return make_request(_rgb(image), scale, self.spec.scale)

    def analyze(self, image: ImageInput, *, scale: str | ScaleRequest | None = DEFAULT_SCALE) -> ImageAnalysis:
        """Answer for a whole image of any size by the shared rule (``imageclf.core.rule``).

        Example:
            >>> Predictor("hub_model").analyze("lungaca1.jpeg", scale="auto").to_json()["label"]
            'lung_aca'
        """
        return rule.analyze(self.request(image, scale), self.spec, self.engine)

    def prepare(self, image: ImageInput) -> np.ndarray:
        """Turn a path, encoded bytes or an array into one model input (H x W x 3 uint8).

        Raises:
            ImageError: the input is not a usable image.
        """
        return to_model_input(_rgb(image), size=self.input_size)

    def classify_fields(self, images: Sequence[ImageInput], *, batch: int = pipeline.CHUNK) -> FieldTable:
        """Each image as ONE field (resized to the input, no scale step, its own stain estimate), through
        the field loop: probabilities and each field's refusal reason, in order. Images are decoded and
        resized one batch at a time, so a long list costs the memory of one batch of model inputs.

        Raises:
            ImageError: an input is not a usable image.
        """
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}.")
        plan = pipeline.FieldPlan(_PreparedFields(self, images), np.zeros((len(images), 4), np.int64),
                                  np.ones(len(images)), stain_each=True)
        return pipeline.run(plan, self.engine, self.spec, batch=batch)

    def _check_model(self) -> None:
        # A wrong input size or class count would silently give garbage; fail at start instead.
        # The probe prediction also builds the compiled predict function (the warm-up).
        shape = tuple(self.model.input_shape)
        if len(shape) != 4 or shape[-1] != 3:
            raise ModelFolderError(f"Model input shape {shape} is not (batch, H, W, 3).")
        if None not in shape[1:3] and tuple(shape[1:3]) != self.input_size:
            raise ModelFolderError(
                f"Model input {shape[1:3]} differs from config input_size {list(self.input_size)}."
            )
        probe = np.asarray(self.model.predict_on_batch(np.zeros((1, *self.input_size, 3), dtype=np.uint8)))
        if probe.shape != (1, len(self.class_ids)):
            raise ModelFolderError(
                f"Model outputs shape {probe.shape[1:]}, labels.json has {len(self.class_ids)} classes."
            )
        if not np.isclose(probe.sum(), 1.0, atol=1e-3) or (probe < 0).any():
            raise ModelFolderError("Model outputs are not softmax probabilities (they do not sum to 1).")
        if self.feature_check is not None or self.tissue_gate is not None:
            try:   # warm up the two-output pass too; check the feature width
                self.engine.run(np.zeros((1, *self.input_size, 3), dtype=np.uint8))
            except FeatureOODError as err:
                raise ModelFolderError(f"config.json 'feature_ood': {err}") from None
            except TissueGateError as err:
                raise ModelFolderError(f"config.json 'tissue_gate': {err}") from None


class _PreparedFields:
    """A list of images as fields, decoded and resized when the loop reads them."""

    def __init__(self, predictor: Predictor, images: Sequence[ImageInput]) -> None:
        self.predictor, self.images = predictor, images

    def __len__(self) -> int:
        return len(self.images)

    def read(self, start: int, stop: int) -> np.ndarray:
        return np.stack([self.predictor.prepare(image) for image in self.images[start:stop]])


def _rgb(image: ImageInput) -> np.ndarray:
    """A path, encoded bytes or an array as full-resolution RGB uint8 (the one array-or-file check)."""
    if isinstance(image, np.ndarray):
        return to_rgb_uint8(image)
    if isinstance(image, (str, os.PathLike, bytes, bytearray, memoryview)):
        return decode_image(image)
    raise ImageError(f"Expected an image path, bytes or array, got {type(image).__name__}.")


def _load_model(path: Path) -> keras.Model:
    """Load a ``.keras`` file made of built-in Keras objects only; anything else is refused."""
    try:
        problems = unsafe_parts(path)
    except UnsafeModelError as err:
        raise ModelFolderError(str(err)) from None
    if problems:
        raise ModelFolderError(
            f"{path} is refused: it contains {', '.join(problems)}, which can run arbitrary code "
            "when loaded. Rebuild the model from built-in Keras layers only."
        )
    try:
        # safe_mode=True stays on as the second line of defence (it refuses Python lambdas).
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as err:  # a damaged archive or an unknown class: one line, not a traceback
        raise ModelFolderError(f"{path} could not be loaded: {first_line(err)}") from err


def _load_tissue_gate(config: ModelConfig, folder: Path, model: keras.Model) -> TissueGate | None:
    """config.json's tissue gate, or ``None`` without one. A block that cannot be served stops the
    load: a model folder that promises a refusal must not start without it. The gate must read the
    feature check's layer, since both are scored from the one features output of a pass."""
    block = config.tissue_gate
    if block is None:
        return None
    try:
        if config.feature_ood is not None and block.feature_layer != config.feature_ood.feature_layer:
            raise TissueGateError(f"it reads layer {block.feature_layer!r}, the feature check "
                                  f"{config.feature_ood.feature_layer!r} (one pass gives one feature layer)")
        model.get_layer(block.feature_layer)   # ValueError: the model has no such layer
        return TissueGate.from_config(block, folder=folder)
    except ValueError as err:   # TissueGateError is one
        raise ModelFolderError(f"config.json 'tissue_gate' cannot be used: {first_line(err)}") from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return read_json(path)
    except ConfigError as err:
        raise ModelFolderError(str(err)) from None


def _read_labels(path: Path, expected: list[str]) -> tuple[list[str], list[str]]:
    """labels.json -> (class ids, human names), ordered by output index."""
    raw = _read_json(path)
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
