"""The Keras field engine: one forward pass gives the probabilities and the feature check's score.

Implements ``imageclf.core.engine.FieldEngine`` for a loaded ``model.keras``. With a feature check
(config.json ``feature_ood``) the model is wrapped to output its pooled ``features`` layer too,
so both come from the same pass; the score is a distance, and whether it refuses a field is the
refusal rule's call.

Example:
    >>> engine = KerasEngine(model, feature_check)
    >>> engine.run(np.zeros((4, 224, 224, 3), np.uint8)).probabilities.shape
    (4, 3)
"""
from __future__ import annotations

import numpy as np

from imageclf.core.engine import FieldOutputs
from imageclf.model.feature_check import FeatureCheck
from imageclf.settings import quiet_tensorflow

quiet_tensorflow()   # before Keras imports TensorFlow
import keras  # noqa: E402

__all__ = ["KerasEngine", "with_features"]


class KerasEngine:
    """Runs a Keras classifier (RGB uint8 in, softmax out) on batches of fields."""

    def __init__(self, model: keras.Model, feature_check: FeatureCheck | None = None) -> None:
        self.model = model
        self.feature_check = feature_check
        self._forward = model
        if feature_check is not None:   # KeyError or ValueError: no such layer (the loader says which)
            self._forward = with_features(model, feature_check.feature_layer)

    def run(self, fields: np.ndarray) -> FieldOutputs:
        """Probabilities (N x C float64) and feature scores (N float64, or None) for N fields."""
        fields = np.asarray(fields)
        if self.feature_check is None:
            return FieldOutputs(np.asarray(self.model.predict_on_batch(fields), dtype=np.float64))
        probabilities, features = self._forward.predict_on_batch(fields)
        return FieldOutputs(np.asarray(probabilities, dtype=np.float64),
                            np.asarray(self.feature_check.scores(np.asarray(features)), dtype=np.float64))


def with_features(model: keras.Model, feature_layer: str) -> keras.Model:
    """The classifier with its pooled features as a second output: one pass gives both (the
    served pass, and the graph ``training/export/runtime_export.py`` converts)."""
    return keras.Model(model.inputs, [model.outputs[0], model.get_layer(feature_layer).output])
