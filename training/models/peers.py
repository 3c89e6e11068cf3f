"""Peer architectures for the benchmark, re-implemented from two seed projects' descriptions.

These are NOT the seed projects' code or weights: each function rebuilds, with built-in
Keras layers only, the layer list its project describes, so that both can be trained on
our leakage-free grouped split under the same budget as our own model
(``training/evaluation/compare_peers.py``). Where a description leaves a detail open, we take the Keras
default and say so: ``padding="valid"``, 2x2 max pooling, Glorot init, bilinear resizing.

Like ``training.models.architectures.build_model``, every peer takes raw RGB ``uint8`` tiles and does its
own preprocessing inside the model (resize to the peer's input size when it differs,
then ``Rescaling(1/255)``), so the same input pipeline and the same inference contract
serve every model in the comparison.

Example:
    >>> model = peer_a(3)                      # 224 x 224 uint8 in, 3 softmax probabilities out
    >>> model = peer_b(3, input_size=64)       # tiny run: works at round(256 * 64 / 224) = 73 px
"""
from __future__ import annotations

from collections.abc import Callable

import keras
from keras import layers

REFERENCE_INPUT = 224  # the tile size the seed descriptions assume for our data


def _preprocess(inputs, *, work_size: int):
    """uint8 -> float in [0, 1] at ``work_size``; the resize is skipped when sizes already match."""
    # Rescaling first casts uint8 to float; bilinear resizing is linear, so the order
    # (scale then resize) gives the same numbers as resize then scale.
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    if inputs.shape[1] != work_size or inputs.shape[2] != work_size:
        x = layers.Resizing(work_size, work_size, interpolation="bilinear", name="resize")(x)
    return x


def peer_a(num_classes: int, *, input_size: int = REFERENCE_INPUT, name: str = "peer_a") -> keras.Model:
    """Seed project A, re-implemented from its description: a two-block plain CNN at 224 px.

    Conv2D(32, 3, relu) - MaxPool - Conv2D(64, 3, relu) - MaxPool - Flatten -
    Dense(128, relu) - Dropout(0.5) - Dense(num_classes, softmax).

    It runs at the tile size itself (224 px in the real benchmark, ``input_size`` in a
    tiny run), so there is no resize. The Flatten -> Dense(128) layer holds almost all of
    its parameters (about 24 M at 224 px).

    Args:
        num_classes: number of output classes.
        input_size: side of the uint8 input tile (and of the network).
        name: Keras model name.
    """
    inputs = keras.Input(shape=(input_size, input_size, 3), dtype="uint8", name="image")
    x = _preprocess(inputs, work_size=input_size)
    x = layers.Conv2D(32, 3, activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(name="pool1")(x)
    x = layers.Conv2D(64, 3, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, activation="relu", name="fc1")(x)
    x = layers.Dropout(0.5, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)


def peer_b_work_size(input_size: int) -> int:
    """Peer B's own resolution: 256 px for 224 px tiles, scaled proportionally for tiny runs."""
    return 256 if input_size == REFERENCE_INPUT else max(32, round(256 * input_size / REFERENCE_INPUT))


def peer_b(num_classes: int, *, input_size: int = REFERENCE_INPUT, name: str = "peer_b") -> keras.Model:
    """Seed project B, re-implemented from its description: a three-block CNN at 256 px.

    Resizing(224 -> 256) - Conv2D(32, 5, relu) - MaxPool - Conv2D(64, 3, relu) - MaxPool -
    Conv2D(128, 3, relu) - MaxPool - Flatten - Dense(256, relu) - BatchNormalization -
    Dense(128, relu) - Dropout(0.5) - BatchNormalization - Dense(num_classes, softmax).

    The project describes 256 px inputs; our tiles are 224 px, so the model upsamples them
    itself (this adds no information, only compute). For a tiny ``input_size`` the working
    size is scaled by the same 256/224 factor (``peer_b_work_size``).

    Args:
        num_classes: number of output classes.
        input_size: side of the uint8 input tile.
        name: Keras model name.
    """
    inputs = keras.Input(shape=(input_size, input_size, 3), dtype="uint8", name="image")
    x = _preprocess(inputs, work_size=peer_b_work_size(input_size))
    x = layers.Conv2D(32, 5, activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(name="pool1")(x)
    x = layers.Conv2D(64, 3, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(name="pool2")(x)
    x = layers.Conv2D(128, 3, activation="relu", name="conv3")(x)
    x = layers.MaxPooling2D(name="pool3")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(256, activation="relu", name="fc1")(x)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.Dense(128, activation="relu", name="fc2")(x)
    x = layers.Dropout(0.5, name="dropout")(x)
    x = layers.BatchNormalization(name="bn2")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)


# key -> (builder, one-line description for the benchmark report)
PEERS: dict[str, tuple[Callable[..., keras.Model], str]] = {
    "a": (peer_a, "seed project A (re-implemented): 2x[Conv-MaxPool] + Dense(128), 224 px"),
    "b": (peer_b, "seed project B (re-implemented): 3x[Conv-MaxPool] + Dense(256,128) + BN, 256 px"),
}


def build_peer(key: str, *, num_classes: int, input_size: int = REFERENCE_INPUT) -> keras.Model:
    """Build peer ``key`` (a key of ``PEERS``) for ``num_classes`` and a uint8 ``input_size`` tile."""
    if key not in PEERS:
        raise ValueError(f"Unknown peer {key!r}; choose from {sorted(PEERS)}")
    builder, _ = PEERS[key]
    return builder(num_classes, input_size=input_size)
