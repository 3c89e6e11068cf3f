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

Keras (TensorFlow: seconds to import, hundreds of MB) is loaded only where it is used: at start
when it serves, else on the first use of :attr:`Predictor.model` (Grad-CAM). The start-up checks
that do not need it run either way (``imageclf.model.load_checks``).

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
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

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
from imageclf.errors import first_line
from imageclf.model.config import ConfigError, ModelConfig, read_config
from imageclf.model.feature_check import FeatureCheck, FeatureOODError
from imageclf.model.load_checks import (ModelFolderError, check_archive, check_engine, check_keras, read_json_file,
                                         read_labels)
from imageclf.model.openvino_engine import OpenVinoEngine, RuntimeFileError
from imageclf.model.safety import UnsafeModelError, unsafe_parts
from imageclf.model.tissue_gate import TissueGate, TissueGateError
from imageclf.settings import Settings

if TYPE_CHECKING:  # types only: importing them loads TensorFlow
    import keras

    from imageclf.model.keras_engine import KerasEngine

ImageInput = np.ndarray | str | os.PathLike | bytes
log = logging.getLogger(__name__)

__all__ = ["ImageError", "ImageInput", "ModelFolderError", "Predictor"]


class Predictor:
    """A loaded model folder: ``spec``, ``engine``, the Keras ``model`` (for Grad-CAM) and metrics.

    Checks the folder against ``config.json`` and ``labels.json`` and runs one probe through the
    served engine, which also warms it up so the first real request is not slow. A ``model.keras``
    with anything but built-in Keras objects (a ``Lambda`` layer, a custom class) is refused at
    start, before anything reads it (``imageclf.model.safety``), whether or not Keras serves; Keras
    itself loads it with ``safe_mode=True``, no compile, when it serves or Grad-CAM first asks
    (:attr:`model`). ``settings``: the process's settings (``max_fields``, and ``model_runtime``:
    ``"auto"`` serves the optimised runtime when present, ``"keras"`` never); ``runtime`` overrides
    the latter. ``self.runtime`` names the engine in use.
    """

    def __init__(self, folder: str | os.PathLike, *, settings: Settings | None = None,
                 runtime: str | None = None) -> None:
        self.folder = Path(folder)
        try:
            self.model_config: ModelConfig = read_config(self.folder)
        except ConfigError as err:
            raise ModelFolderError(str(err)) from None
        config = self.model_config
        self.class_ids, self.names = read_labels(self.folder / "labels.json", config.labels)
        self.input_size: tuple[int, int] = tuple(config.input_size)
        metrics_path = self.folder / "metrics.json"
        self.metrics: dict[str, Any] = read_json_file(metrics_path) if metrics_path.is_file() else {}
        model_path = self.folder / "model.keras"
        if not model_path.is_file():
            raise ModelFolderError(f"{model_path} not found.")
        _refuse_unsafe(model_path)
        self._model: keras.Model | None = None
        self._model_lock = threading.Lock()
        self.feature_check: FeatureCheck | None = None
        self.tissue_gate = _load_tissue_gate(config, self.folder)
        try:
            if config.feature_ood is not None:
                self.feature_check = FeatureCheck.from_config(config.feature_ood, folder=self.folder)
        except (FeatureOODError, KeyError, ValueError) as err:
            raise ModelFolderError(f"config.json 'feature_ood' cannot be used: {first_line(err)}") from None
        read = {name: block.feature_layer for name, block in (("feature_ood", config.feature_ood),
                                                              ("tissue_gate", config.tissue_gate)) if block}
        check_archive(model_path, self.input_size, layers=read)
        settings = settings or settings_module.SETTINGS
        self.engine: KerasEngine | OpenVinoEngine | None = None
        self.runtime = "keras"
        if (runtime or settings.model_runtime) != "keras" and config.runtime is not None:
            try:
                self.engine = OpenVinoEngine.from_folder(self.folder, config.runtime, self.feature_check,
                                                         tissue_gate=self.tissue_gate)
                self.runtime = self.engine.description   # the precision served on this CPU, and why
            except RuntimeFileError as err:
                log.warning("Serving with Keras, not the optimised runtime: %s.", err)
        if self.engine is None:   # Keras serves: loaded (and checked, in .model) now
            try:
                self.engine = _keras().KerasEngine(self.model, self.feature_check, self.tissue_gate)
            except (KeyError, ValueError) as err:
                raise ModelFolderError(f"config.json 'feature_ood' cannot be used: {first_line(err)}") from None
        self.spec = ClassifierSpec(
            class_ids=tuple(self.class_ids), names=tuple(self.names), input_size=self.input_size,
            input_unit=config.input_unit, scale=config.scale, stain=config.stain, max_fields=settings.max_fields,
            refusal=RefusalRule(abstain=config.abstain or AbstainRule(),
                                feature_threshold=None if self.feature_check is None else self.feature_check.threshold,
                                gate_threshold=None if self.tissue_gate is None else self.tissue_gate.threshold))
        check_engine(self.engine, self.input_size, classes=len(self.class_ids))

    @property
    def model(self) -> keras.Model:
        """The Keras model (Grad-CAM's; also the engine's when Keras serves), loaded on first use.

        A late load is held to what a start-up load was: the safety check again (the file may have
        changed since start), Keras's safe mode, and the folder's input size and classes
        (``load_checks.check_keras``). Raises :class:`ModelFolderError` when any fails.
        """
        with self._model_lock:   # concurrent first Grad-CAM requests load it once
            if self._model is None:
                start = time.perf_counter()
                model = _load_model(self.folder / "model.keras")
                check_keras(model, self.input_size, classes=len(self.class_ids))
                self._model = model
                log.info("Loaded model.keras with Keras in %.1f s.", time.perf_counter() - start)
            return self._model

    @property
    def keras_loaded(self) -> bool:
        """Whether Keras has loaded the model yet (at start only when it serves)."""
        return self._model is not None

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


def _refuse_unsafe(path: Path) -> None:
    """Refuse a ``.keras`` file made of anything but built-in Keras objects, before anything reads it."""
    try:
        problems = unsafe_parts(path)
    except UnsafeModelError as err:
        raise ModelFolderError(str(err)) from None
    if problems:
        raise ModelFolderError(
            f"{path} is refused: it contains {', '.join(problems)}, which can run arbitrary code "
            "when loaded. Rebuild the model from built-in Keras layers only."
        )


def _load_model(path: Path) -> keras.Model:
    """Load a ``.keras`` file made of built-in Keras objects only; anything else is refused."""
    _refuse_unsafe(path)
    try:
        return _keras().load_model(path)
    except Exception as err:  # a damaged archive or an unknown class: one line, not a traceback
        raise ModelFolderError(f"{path} could not be loaded: {first_line(err)}") from err


def _keras() -> ModuleType:
    """``imageclf.model.keras_engine``, imported where Keras is first needed."""
    from imageclf.model import keras_engine  # deferred: TensorFlow (seconds, hundreds of MB), only where Keras runs
    return keras_engine


def _load_tissue_gate(config: ModelConfig, folder: Path) -> TissueGate | None:
    """config.json's tissue gate, or ``None`` without one. A block that cannot be served stops the
    load: a model folder that promises a refusal must not start without it. The gate must read the
    feature check's layer, since both are scored from the one features output of a pass (that the
    model has the layer is ``load_checks.check_archive``'s)."""
    block = config.tissue_gate
    if block is None:
        return None
    try:
        if config.feature_ood is not None and block.feature_layer != config.feature_ood.feature_layer:
            raise TissueGateError(f"it reads layer {block.feature_layer!r}, the feature check "
                                  f"{config.feature_ood.feature_layer!r} (one pass gives one feature layer)")
        return TissueGate.from_config(block, folder=folder)
    except ValueError as err:   # TissueGateError is one
        raise ModelFolderError(f"config.json 'tissue_gate' cannot be used: {first_line(err)}") from None
