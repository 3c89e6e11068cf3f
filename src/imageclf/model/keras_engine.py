"""The Keras field engine: one forward pass gives the probabilities and the scores of the checks.

Implements ``imageclf.core.engine.FieldEngine`` for a loaded ``model.keras``. With a feature check
(config.json ``feature_ood``) or a tissue gate (``tissue_gate``) the model is wrapped to output its
pooled ``features`` layer too, so the probabilities and every check's score come from the same
pass; a score is a number, and whether it refuses a field is the refusal rule's call.

Serving's one door to Keras (and TensorFlow): ``imageclf.model.predictor`` imports this module only
when Keras serves or Grad-CAM first needs the model (:func:`load_model`).

Example:
    >>> engine = KerasEngine(model, feature_check, tissue_gate)
    >>> engine.run(np.zeros((4, 224, 224, 3), np.uint8)).probabilities.shape
    (4, 3)
"""
from __future__ import annotations

import os

import numpy as np

from imageclf.core.engine import FieldOutputs
from imageclf.model.feature_check import FeatureCheck
from imageclf.model.tissue_gate import TissueGate
from imageclf.settings import quiet_tensorflow

quiet_tensorflow()   # before Keras imports TensorFlow
import keras  # noqa: E402

__all__ = ["KerasEngine", "load_model", "with_features"]


class KerasEngine:
    """Runs a Keras classifier (RGB uint8 in, softmax out) on batches of fields."""

    def __init__(self, model: keras.Model, feature_check: FeatureCheck | None = None,
                 tissue_gate: TissueGate | None = None) -> None:
        self.model = model
        self.feature_check = feature_check
        self.tissue_gate = tissue_gate
        self._forward = model
        checks = [check for check in (feature_check, tissue_gate) if check is not None]
        if checks:   # KeyError or ValueError: no such layer (the loader says which); one layer for both
            self._forward = with_features(model, checks[0].feature_layer)

    def run(self, fields: np.ndarray) -> FieldOutputs:
        """Probabilities (N x C float64) and each check's scores (N float64, or None) for N fields."""
        fields = np.asarray(fields)
        if self._forward is self.model:
            return FieldOutputs(np.asarray(self.model.predict_on_batch(fields), dtype=np.float64))
        probabilities, features = self._forward.predict_on_batch(fields)
        return FieldOutputs.from_pass(probabilities, np.asarray(features), self.feature_check, self.tissue_gate)


def load_model(path: str | os.PathLike) -> keras.Model:
    """``model.keras`` as Keras loads it to serve: no compile, and ``safe_mode=True``, the second line of
    defence after the predictor's safety check (it refuses Python lambdas)."""
    return keras.saving.load_model(path, compile=False, safe_mode=True)


def with_features(model: keras.Model, feature_layer: str) -> keras.Model:
    """The classifier with its pooled features as a second output: one pass gives both (the
    served pass, and the graph ``training/export/runtime_export.py`` converts)."""
    return keras.Model(model.inputs, [model.outputs[0], model.get_layer(feature_layer).output])
