"""Augmentation for histology tiles, as ``tf.data`` functions on uint8 batches.

Tissue has no 'up', slides are scanned at slightly different magnifications, and stain
intensity varies between labs and days; each augmentation imitates one of these. They
run in the input pipeline only; the exported model contains none of them.

Example:
    >>> augment = Augmentation(free_rotation_degrees=15, hed_jitter=0.03)
    >>> ds = ds.batch(32).map(augment)        # (uint8 images, labels) -> same, augmented
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import tensorflow as tf

from training.data.lab_shift import RGB_FROM_HED  # Ruifrok & Johnston stain vectors, rows normalised

# Ruifrok & Johnston stain vectors (rows: haematoxylin, eosin, DAB) in optical density.
_RGB_FROM_HED = RGB_FROM_HED.astype(np.float32)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED).astype(np.float32)


@dataclass(frozen=True)
class Augmentation:
    """Which augmentations to apply (zero or False switches one off, for ablations)."""

    flips: bool = True
    rot90: bool = True
    free_rotation_degrees: float = 15.0
    scale_jitter: float = 0.10  # zoom in or out by up to 10%
    colour_jitter: float = 0.08  # brightness delta; contrast/saturation scale by 2x this
    hed_jitter: float = 0.03  # per-stain scale and shift in optical density

    def to_dict(self) -> dict:
        return asdict(self)

    def __call__(self, images, labels):
        x = tf.cast(images, tf.float32)
        if self.flips:
            x = tf.image.random_flip_left_right(tf.image.random_flip_up_down(x))
        if self.rot90:
            x = tf.map_fn(lambda im: tf.image.rot90(im, tf.random.uniform([], 0, 4, tf.int32)), x)
        if self.free_rotation_degrees or self.scale_jitter:
            x = _geometric(x, self.free_rotation_degrees, self.scale_jitter)
        if self.hed_jitter:
            x = _hed_jitter(x, self.hed_jitter)
        if self.colour_jitter:
            x = _colour_jitter(x, self.colour_jitter)
        return tf.cast(tf.clip_by_value(x, 0.0, 255.0) + 0.5, tf.uint8), labels


def _geometric(x, degrees: float, scale: float):
    """Small free rotation and zoom, one random affine per image, reflecting at the borders."""

    n = tf.shape(x)[0]
    h = tf.cast(tf.shape(x)[1], tf.float32)
    w = tf.cast(tf.shape(x)[2], tf.float32)
    angle = tf.random.uniform([n], -1.0, 1.0) * degrees * np.pi / 180.0
    zoom = 1.0 + tf.random.uniform([n], -scale, scale)
    cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
    # Output pixel (x, y) samples input at A @ (x, y) + t, rotating about the centre.
    cx, cy = (w - 1) / 2, (h - 1) / 2
    tx = cx - cos * cx + sin * cy
    ty = cy - sin * cx - cos * cy
    zeros = tf.zeros_like(cos)
    transforms = tf.stack([cos, -sin, tx, sin, cos, ty, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=transforms, output_shape=tf.shape(x)[1:3], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="REFLECT")


def _hed_jitter(x, amount: float):
    """Scale and shift haematoxylin, eosin and DAB densities independently per image."""

    n = tf.shape(x)[0]
    od = -tf.math.log((x + 1.0) / 256.0)
    hed = tf.einsum("bhwc,cd->bhwd", od, _HED_FROM_RGB)
    alpha = tf.random.uniform([n, 1, 1, 3], 1.0 - amount, 1.0 + amount)
    beta = tf.random.uniform([n, 1, 1, 3], -amount, amount)
    od = tf.einsum("bhwd,dc->bhwc", hed * alpha + beta, _RGB_FROM_HED)
    return tf.exp(-od) * 256.0 - 1.0


def _colour_jitter(x, amount: float):
    """Brightness, contrast and saturation jitter (per image) on 0-255 floats."""

    n = tf.shape(x)[0]
    x = x + tf.random.uniform([n, 1, 1, 1], -amount, amount) * 255.0
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    x = (x - mean) * tf.random.uniform([n, 1, 1, 1], 1 - 2 * amount, 1 + 2 * amount) + mean
    gray = tf.reduce_mean(x, axis=3, keepdims=True)
    return (x - gray) * tf.random.uniform([n, 1, 1, 1], 1 - 2 * amount, 1 + 2 * amount) + gray
