"""Grad-CAM for any single-input Keras image classifier: where the model looked for a class.

The target layer is found automatically: the last layer with a spatial (batch, H, W, C)
output before the pooling / dense head, looking inside a nested backbone (for example a
``keras.applications`` model used as a layer) when the outer model has none of its own.
The class score is the input of the final softmax (the logits, temperature-scaled if the
model carries a temperature) so the gradients do not vanish when the model is confident.

This is the Keras (TensorFlow) half of Grad-CAM; ``imageclf.model.explain`` is the half without
TensorFlow (colours, overlay, building a :class:`GradCam` on first use),
so a process that never explains never imports TensorFlow.

Example:
    >>> cam = GradCam(predictor.model)
    >>> cam.target_path
    ('stage4_add',)
    >>> result = cam.heatmap(predictor.prepare("tile.jpeg"))
    >>> result.heatmap.shape, result.class_index            # feature-map resolution, in [0, 1]
    ((4, 4), 2)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from imageclf.errors import ModelError
from imageclf.settings import quiet_tensorflow

quiet_tensorflow()   # before Keras imports TensorFlow
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

__all__ = ["CamResult", "GradCam", "GradCamError", "find_target_path", "build_cam_model"]

# Layers that only rescale or resize pixels: a "feature map" there is just the input image.
_PREPROCESSING = (keras.layers.InputLayer, keras.layers.Rescaling, keras.layers.Resizing,
                  keras.layers.Normalization, keras.layers.CenterCrop)


class GradCamError(ModelError, RuntimeError):
    """The model has no layer Grad-CAM can use, or its graph cannot be rewired for it."""

@dataclass(frozen=True)
class CamResult:
    """A class activation map at feature-map resolution, scaled to [0, 1]."""

    heatmap: np.ndarray  # (h, w) float32
    class_index: int


def find_target_path(model: keras.Model) -> tuple[str, ...]:
    """Names leading to the Grad-CAM layer: ``("conv",)``, or ``("backbone", "top_conv")`` when nested.

    Example:
        >>> find_target_path(keras.applications.MobileNetV3Small(weights=None))
        ('activation_17',)

    Raises:
        GradCamError: no layer (nested or not) has a spatial output.
    """
    for layer in reversed(model.layers):
        if isinstance(layer, keras.Model):
            try:
                return (layer.name, *find_target_path(layer))
            except GradCamError:
                continue
        if not isinstance(layer, _PREPROCESSING) and _is_spatial(layer):
            return (layer.name,)
    raise GradCamError(f"Model {model.name!r} has no layer with a (batch, H, W, C) output to explain.")


def build_cam_model(model: keras.Model, path: tuple[str, ...] | None = None) -> keras.Model:
    """A model with the same inputs and weights returning ``[features at path, class scores]``.

    The graph is re-traced with the same layer objects (no weights are copied), so it stays
    in sync with ``model``. When the model ends in a softmax, its input is the class score.
    """
    path = path or find_target_path(model)
    if len(model.inputs) != 1:
        raise GradCamError("Grad-CAM here supports single-input models only.")
    final = model.layers[-1]
    logits_of = _pre_softmax(final)
    captured: dict[str, Any] = {}
    target = model.get_layer(path[0])
    nested = _feature_model(target, path[1:]) if len(path) > 1 else None

    def call(layer: keras.layers.Layer, *args: Any, **kwargs: Any) -> Any:
        if layer is target and nested is not None:
            features, out = nested(*args, **kwargs)
            captured["features"] = features
            return out
        out = layer(*args, **kwargs)
        if layer is target:
            captured["features"] = out
        if layer is final and logits_of is not None:
            captured["score"] = logits_of(args[0])
        return out

    try:
        clone = keras.models.clone_model(model, clone_function=lambda layer: layer, call_function=call)
    except Exception as err:  # any rewiring failure: say which model, not a Keras traceback
        raise GradCamError(f"Cannot rewire model {model.name!r} for Grad-CAM: {err}") from err
    if "features" not in captured:
        raise GradCamError(f"Layer {'/'.join(path)} is not on the path to the model output.")
    return keras.Model(clone.inputs[0], [captured["features"], captured.get("score", clone.outputs[0])],
                       name=f"{model.name}_gradcam")


class GradCam:
    """Grad-CAM heatmaps for one loaded model (built once, reused for every request).

    Example:
        >>> GradCam(model).heatmap(np.zeros((224, 224, 3), np.uint8)).heatmap.max() <= 1.0
        True
    """

    def __init__(self, model: keras.Model, *, path: tuple[str, ...] | None = None) -> None:
        self.target_path = path or find_target_path(model)
        self._model = build_cam_model(model, self.target_path)

    def heatmap(self, image: np.ndarray, *, class_index: int | None = None) -> CamResult:
        """Grad-CAM of one model input (H x W x 3, the model's dtype) for a class (default: the top one)."""
        batch = tf.convert_to_tensor(np.asarray(image)[None])
        with tf.GradientTape() as tape:
            # Watch every variable, not only trainable ones: with a frozen backbone the
            # feature map would otherwise not be on the tape and the gradient would be None.
            tape.watch([v.value for v in self._model.variables if keras.backend.is_float_dtype(v.dtype)])
            features, scores = self._model(batch, training=False)
            index = int(tf.argmax(scores[0])) if class_index is None else int(class_index)
            score = scores[:, index]
        grads = tape.gradient(score, features)
        if grads is None:
            raise GradCamError("The class score does not depend on the target layer.")
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)  # one weight per channel
        cam = tf.nn.relu(tf.reduce_sum(features * weights, axis=-1))[0].numpy().astype(np.float32)
        peak = float(cam.max())
        cam = cam / peak if peak > 1e-12 else np.zeros_like(cam)  # no positive evidence: flat map
        return CamResult(heatmap=cam, class_index=index)


def _is_spatial(layer: keras.layers.Layer) -> bool:
    try:
        shape = layer.output.shape
    except (AttributeError, ValueError):  # never called, or called more than once
        return False
    return len(shape) == 4 and any(dim is None or dim > 1 for dim in shape[1:3])


def _feature_model(model: keras.Model, path: tuple[str, ...]) -> keras.Model:
    """``model`` re-traced to return ``[features at path, model output]`` (for nested backbones)."""
    target = model.get_layer(path[0])
    if len(path) == 1:
        return keras.Model(model.inputs[0], [target.output, model.outputs[0]])
    inner = _feature_model(target, path[1:])
    captured: dict[str, Any] = {}

    def call(layer: keras.layers.Layer, *args: Any, **kwargs: Any) -> Any:
        if layer is target:
            captured["features"], out = inner(*args, **kwargs)
            return out
        return layer(*args, **kwargs)

    clone = keras.models.clone_model(model, clone_function=lambda layer: layer, call_function=call)
    return keras.Model(clone.inputs[0], [captured["features"], clone.outputs[0]])


def _pre_softmax(layer: keras.layers.Layer) -> Any:
    """For a final softmax layer, a function from its input to the logits; else ``None``."""
    if isinstance(layer, keras.layers.Softmax):
        return lambda x: x
    activation = getattr(layer, "activation", None)
    if activation is not keras.activations.softmax:
        return None
    if isinstance(layer, keras.layers.Activation):
        return lambda x: x
    if isinstance(layer, keras.layers.Dense):
        # Dense(activation="softmax"): a linear twin sharing the kernel and bias gives the logits.
        def logits(x: Any) -> Any:
            out = keras.ops.matmul(x, layer.kernel)
            return out + layer.bias if layer.use_bias else out
        return logits
    return None
