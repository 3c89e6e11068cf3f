"""Model definitions. Every model takes raw RGB ``uint8`` pixels.

Resizing to the working resolution and scaling to floats are layers inside the model,
so whoever loads ``model.keras`` (the Space, a script, plain Keras) needs no
preprocessing code of its own.

Example:
    >>> model = build_model(num_classes=3, input_size=(224, 224), work_size=128)
    >>> model.predict(np.zeros((1, 224, 224, 3), np.uint8)).sum()  # -> 1.0
"""
from __future__ import annotations

import keras
from keras import layers

BACKBONES = {
    # name -> (keras.applications constructor, its own preprocessing expects 0-255 floats)
    "efficientnetb0": "EfficientNetB0",
    "convnext_tiny": "ConvNeXtTiny",
    "mobilenetv3small": "MobileNetV3Small",
}
# DenseNet121 expects ImageNet mean/std on 0-1 floats (keras.applications.densenet.preprocess_input);
# done here with built-in layers, so the saved model loads with safe_mode=True.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _conv_bn(x, filters: int, *, strides: int = 1, separable: bool = True, name: str):
    conv = layers.SeparableConv2D if separable else layers.Conv2D
    x = conv(filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    # momentum 0.9: moving statistics settle within one short epoch.
    x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _residual_stage(x, filters: int, *, name: str):
    """Two separable convs, then downsample by 2; a 1x1 strided shortcut keeps gradients short."""
    shortcut = layers.Conv2D(filters, 1, strides=2, use_bias=False, name=f"{name}_short")(x)
    shortcut = layers.BatchNormalization(momentum=0.9, name=f"{name}_short_bn")(shortcut)
    x = _conv_bn(x, filters, name=f"{name}_a")
    x = _conv_bn(x, filters, name=f"{name}_b")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"{name}_pool")(x)
    return layers.Add(name=f"{name}_add")([x, shortcut])


def compact_cnn(inputs, *, num_classes: int, widths=(32, 64, 128, 192), dropout: float = 0.25):
    """A small residual separable CNN (~0.15 M parameters) for float inputs in [-1, 1]."""
    x = _conv_bn(inputs, widths[0] // 2, strides=2, separable=False, name="stem")
    for i, filters in enumerate(widths):
        x = _residual_stage(x, filters, name=f"stage{i + 1}")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    return layers.Dense(num_classes, name="logits")(x)


def build_model(
    *,
    num_classes: int,
    input_size: tuple[int, int] = (224, 224),
    work_size: int | None = 128,
    backbone: str | None = None,
    backbone_weights: str | None = None,
    widths: tuple[int, ...] = (32, 64, 128, 192),
    name: str = "histology_classifier",
) -> keras.Model:
    """Build a classifier: uint8 RGB ``input_size`` image in, softmax probabilities out.

    Args:
        num_classes: number of output classes.
        input_size: (height, width) of the uint8 input; tiles of this size are the unit.
        work_size: side the network runs at (resized inside the model); None keeps input size.
        backbone: None for the compact CNN, ``"densenet121"``, or a key of ``BACKBONES``.
        backbone_weights: ``None`` (train from scratch), ``"imagenet"`` (needs internet) or, for
            densenet121, a ``.weights.h5`` file (see ``training.models.backbone_weights``).
        widths: channels of the compact CNN's four stages.
    """
    inputs = keras.Input(shape=(*input_size, 3), dtype="uint8", name="image")
    x = layers.Rescaling(1.0, name="to_float")(inputs)  # uint8 -> float32, no scaling yet
    if work_size and tuple(input_size) != (work_size, work_size):
        x = layers.Resizing(work_size, work_size, interpolation="bilinear", antialias=True, name="resize")(x)
    if backbone == "densenet121":
        return _densenet121(inputs, x, num_classes=num_classes, weights=backbone_weights, name=name)
    if backbone:
        if backbone not in BACKBONES:
            raise ValueError(f"Unknown backbone {backbone!r}; choose from {sorted(BACKBONES) + ['densenet121']}")
        constructor = getattr(keras.applications, BACKBONES[backbone])
        # These applications scale 0-255 inputs themselves (include_preprocessing).
        base = constructor(include_top=False, weights=backbone_weights, input_shape=x.shape[1:], pooling="avg")
        x = layers.Dropout(0.2, name="dropout")(base(x))
        logits = layers.Dense(num_classes, name="logits")(x)
    else:
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale")(x)
        logits = compact_cnn(x, num_classes=num_classes, widths=widths)
    # Softmax as its own layer so a calibration temperature can be placed before it.
    probabilities = layers.Softmax(name="probabilities")(logits)
    return keras.Model(inputs, probabilities, name=name)


def _densenet121(inputs, x, *, num_classes: int, weights: str | None, name: str) -> keras.Model:
    """DenseNet121 on ImageNet-normalised floats; pooled ``features``, ``logits``, ``temperature``.

    The temperature starts at 1; ``training.calibration.temperature.with_temperature`` replaces it.
    """
    x = layers.Rescaling(1.0 / 255.0, name="scale")(x)
    x = layers.Normalization(mean=IMAGENET_MEAN, variance=[s * s for s in IMAGENET_STD], name="imagenet_norm")(x)
    file_weights = weights not in (None, "imagenet")
    base = keras.applications.DenseNet121(include_top=False, weights=None if file_weights else weights,
                                          input_shape=x.shape[1:])
    if file_weights:
        base.load_weights(weights)
    x = layers.GlobalAveragePooling2D(name="features")(base(x))
    x = layers.Dropout(0.2, name="dropout")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    scaled = layers.Rescaling(1.0, name="temperature")(logits)
    probabilities = layers.Softmax(name="probabilities")(scaled)
    return keras.Model(inputs, probabilities, name=name)


def model_input(model: keras.Model):
    """The model's input as given to ``keras.Model``: a single tensor stays single (not a list),
    so users may call ``model.predict(array)`` and read ``model.input.dtype``."""
    return model.inputs[0] if len(model.inputs) == 1 else model.inputs


def inference_copy(model: keras.Model) -> keras.Model:
    """The same layers and weights as an uncompiled model: saves without optimizer state."""
    return keras.Model(model_input(model), model.outputs[0], name=model.name)


def logits_model(model: keras.Model) -> keras.Model:
    """The model up to its ``"logits"`` layer (same weights, no softmax).

    Example:
        >>> logits_model(model).predict(images[:2]).shape  # (2, num_classes)
    """
    return keras.Model(model_input(model), model.get_layer("logits").output, name=f"{model.name}_logits")
