"""Run a ``hub_model`` folder (model.keras + labels.json + config.json) on images.

Framework-free on purpose (no Gradio): the Space, scripts and tests share it.

Example:
    >>> predictor = Predictor("hub_model")
    >>> result = predictor.predict("tile.jpeg")      # path, bytes or RGB array
    >>> result["label"], result["name"], round(result["confidence"], 3)
    ('class_a', 'Class A', 0.981)
    >>> result["probabilities"]                    # {class id: probability}
    {'class_a': 0.981, 'class_b': 0.002, 'class_c': 0.017}
    >>> result["abstained"], result["abstain_reason"]  # from config.json "abstain" (space/imageclf/ood.py)
    (False, None)
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from imageclf import ood
from imageclf.analysis import ImageAnalysis, analyze_image
from imageclf.errors import first_line
from imageclf.feature_ood import FeatureCheck, FeatureOODError
from imageclf.imaging import ImageError, decode_image, to_model_input, to_rgb_uint8
from imageclf.model_config import ConfigError, ModelConfig, read_config, read_json
from imageclf.model_safety import UnsafeModelError, unsafe_parts

# Keep TensorFlow's C++ start-up chatter out of Space logs; set before Keras imports TF.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402

from imageclf.errors import ModelError

ImageInput = np.ndarray | str | os.PathLike | bytes
log = logging.getLogger(__name__)

__all__ = ["ImageError", "ImageInput", "ModelFolderError", "Predictor"]


class ModelFolderError(ModelError, RuntimeError):
    """The model folder breaks the contract (files, labels, input size, outputs)."""

class Predictor:
    """A loaded model plus its labels; call :meth:`predict` on images.

    Loads ``model.keras`` once (``safe_mode=True``, no compile) and checks it against
    ``config.json`` and ``labels.json`` with one probe prediction, which also warms the
    model up so the first real request is not slow. A model with anything but built-in
    Keras objects (a ``Lambda`` layer, a custom class) is refused before Keras reads it
    (``space/imageclf/model_safety.py``).

    Example:
        >>> Predictor("hub_model").predict(np.zeros((224, 224, 3), np.uint8))["name"]
        'Class B'
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        try:
            self.model_config: ModelConfig = read_config(self.folder)
        except ConfigError as err:
            raise ModelFolderError(str(err)) from None
        self.class_ids, self.names = _read_labels(self.folder / "labels.json", self.model_config.labels)
        self.input_size: tuple[int, int] = tuple(self.model_config.input_size)
        self.abstain_rule: ood.AbstainRule = _abstain_rule(self.model_config.abstain)
        metrics_path = self.folder / "metrics.json"
        self.metrics: dict[str, Any] = _read_json(metrics_path) if metrics_path.is_file() else {}
        model_path = self.folder / "model.keras"
        if not model_path.is_file():
            raise ModelFolderError(f"{model_path} not found.")
        self.model = _load_model(model_path)
        self.feature_check: FeatureCheck | None = None
        self._forward = self.model
        if self.model_config.feature_ood:
            self._attach_feature_check(self.model_config.feature_ood)
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

    def analyze(self, image: ImageInput, *, scale: str | None = "auto", **options: Any) -> ImageAnalysis:
        """Answer for a whole image of any size by the shared rule (``space/imageclf/analysis.py``):
        scale, fields, verdict. Every endpoint and client goes through this.

        Example:
            >>> Predictor("hub_model").analyze("lungaca1.jpeg", scale="auto").to_json()["label"]
            'lung_aca'
        """
        rgb = to_rgb_uint8(image) if isinstance(image, np.ndarray) else decode_image(image)
        return analyze_image(rgb, self, scale=scale, **options)

    def prepare(self, image: ImageInput) -> np.ndarray:
        """Turn a path, encoded bytes or an array into one model input (H x W x 3 uint8).

        Raises:
            ImageError: the input is not a usable image.
        """
        if isinstance(image, np.ndarray):
            rgb = to_rgb_uint8(image)
        elif isinstance(image, (str, os.PathLike, bytes, bytearray, memoryview)):
            rgb = decode_image(image)
        else:
            raise ImageError(f"Expected an image path, bytes or array, got {type(image).__name__}.")
        return to_model_input(rgb, size=self.input_size)

    def predict(self, image: ImageInput) -> dict[str, Any]:
        """Classify one image.

        Returns a dict with ``label`` (class id), ``name`` (human name), ``confidence``
        (top probability), ``probabilities`` ({class id: p}), ``confidences`` ({name: p},
        the shape ``gr.Label`` wants), ``abstained`` (the config's abstention rule says the
        answer should not be trusted; always ``False`` without a rule) and ``abstain_reason``
        (why, in plain words, else ``None``).
        """
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Sequence[ImageInput]) -> list[dict[str, Any]]:
        """Classify several images in one model call; same result dicts as :meth:`predict`."""
        if len(images) == 0:
            return []
        batch = np.stack([self.prepare(image) for image in images])
        if self.feature_check is None:
            probs = np.asarray(self.model.predict_on_batch(batch), dtype=np.float64)
            scores = [None] * len(batch)
        else:  # one forward pass gives the probabilities and the features the check reads
            probs, features = self._forward.predict_on_batch(batch)
            probs = np.asarray(probs, dtype=np.float64)
            scores = [float(v) for v in self.feature_check.scores(np.asarray(features))]
        return [self._result(rgb, row, score) for rgb, row, score in zip(batch, probs, scores, strict=True)]

    def _attach_feature_check(self, block: dict[str, Any]) -> None:
        try:
            self.feature_check = FeatureCheck.from_config(block, folder=self.folder)
            layer = self.model.get_layer(self.feature_check.feature_layer)
        except (FeatureOODError, KeyError, ValueError) as err:
            raise ModelFolderError(f"config.json 'feature_ood' cannot be used: {first_line(err)}") from None
        self._forward = keras.Model(self.model.inputs, [self.model.outputs[0], layer.output])

    def _result(self, rgb: np.ndarray, probs: np.ndarray, feature_score: float | None = None) -> dict[str, Any]:
        top = int(np.argmax(probs))
        confidence = float(probs[top])
        # Judged on the exact pixels the model saw, with the rule shared with training.
        familiar = feature_score is None or feature_score <= self.feature_check.threshold
        abstained, reason = ood.decide(rgb, probs, self.abstain_rule, familiar=familiar)
        return {
            "label": self.class_ids[top],
            "name": self.names[top],
            "confidence": confidence,
            "probabilities": {cid: float(p) for cid, p in zip(self.class_ids, probs, strict=True)},
            "confidences": {name: float(p) for name, p in zip(self.names, probs, strict=True)},
            "abstained": abstained,
            "abstain_reason": reason,
            "feature_score": feature_score,
        }

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
        probe = np.asarray(self.model.predict_on_batch(
            np.zeros((1, *self.input_size, 3), dtype=np.uint8)))
        if probe.shape != (1, len(self.class_ids)):
            raise ModelFolderError(
                f"Model outputs shape {probe.shape[1:]}, labels.json has {len(self.class_ids)} classes."
            )
        if not np.isclose(probe.sum(), 1.0, atol=1e-3) or (probe < 0).any():
            raise ModelFolderError("Model outputs are not softmax probabilities (they do not sum to 1).")
        if self.feature_check is not None:  # warm up the two-output pass too; check the feature width
            _, features = self._forward.predict_on_batch(np.zeros((1, *self.input_size, 3), dtype=np.uint8))
            try:
                self.feature_check.scores(np.asarray(features))
            except FeatureOODError as err:
                raise ModelFolderError(f"config.json 'feature_ood': {err}") from None


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


def _abstain_rule(value: Any) -> ood.AbstainRule:
    """The optional ``abstain`` config (``space/imageclf/ood.py`` format); absent means never abstain.

    A rule that is present but unreadable stops the load: silently serving without the
    safety check it describes would be worse than not starting.
    """
    if value is None:
        return ood.AbstainRule()
    if not isinstance(value, dict):
        raise ModelFolderError(f"config.json 'abstain' must be an object, got {value!r}.")
    try:
        return ood.AbstainRule.from_dict(value)
    except (KeyError, TypeError, ValueError) as err:
        raise ModelFolderError(f"config.json 'abstain' is not a valid rule: {err}") from None
