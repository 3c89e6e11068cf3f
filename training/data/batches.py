"""Batches for ``model.fit``: a ``tf.data`` pipeline over decoded uint8 images, augmented when training.

Used by ``training.train`` (step 3 of its story) and by the peer benchmark
(``training.evaluation.compare_peers``), so every model sees the same input pipeline.

Example:
    >>> train_ds = make_dataset(images, labels, batch_size=32, training=True, seed=0)
    >>> val_ds = make_dataset(val_images, val_labels, batch_size=64, training=False)
"""
from __future__ import annotations

import tensorflow as tf

from training.data.augment import Augmentation
from training.runtime.devices import distributable


def make_dataset(images, labels, *, batch_size: int, training: bool, seed: int = 0, augmentation: dict | None = None):
    """A ``tf.data`` pipeline over in-memory uint8 images; training batches are augmented.

    ``batch_size`` is the global batch; under several workers each keeps every N-th example.
    """

    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    if training:
        ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if training:
        ds = ds.map(Augmentation(**(augmentation or {})), num_parallel_calls=tf.data.AUTOTUNE)
    return distributable(ds.prefetch(tf.data.AUTOTUNE))
