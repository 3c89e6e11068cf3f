"""Where training runs: one device, several local devices, or several machines (``tf.distribute``).

* ``default``: TensorFlow's default strategy, one device (what every earlier run used);
* ``mirrored``: ``tf.distribute.MirroredStrategy`` over this machine's GPUs (CPU when none);
* ``multi_worker``: ``tf.distribute.MultiWorkerMirroredStrategy``; every machine runs the same
  command with its own ``TF_CONFIG`` (cluster addresses plus its own task), synchronous
  data-parallel training with collective all-reduce (gRPC between machines).

Keras 3 on TensorFlow runs ``model.fit`` under whichever strategy the model was *built and
compiled* in (``keras.distribution`` is the JAX-only API; it is not used here). ``--batch-size`` is
per replica: the global batch is ``batch_size * strategy.num_replicas_in_sync``. The input
pipeline is an in-memory ``tf.data`` dataset, sharded per worker by element
(``AutoShardPolicy.DATA``): each worker shuffles with the same seed and keeps every N-th example.

Keras 3.15's ``model.fit`` breaks in two helpers with more than one worker (keras-team/keras
issue #20585): it all-reduces the first ``(x, y)`` batch as one value just to learn its shapes,
and it means per-replica scalar logs over axis 0. :func:`fit_multi_worker_ready` replaces those
two helpers, for multi-worker runs only; the training step itself (gradients all-reduced by the
Keras optimizer, loss scaled by the number of replicas) is Keras's own.

Keras 3 callbacks know nothing of workers either, so this module decides who writes: the chief writes
into the output folder; every other worker writes its checkpoints to a temporary folder that is
deleted when it finishes (the pattern of the TensorFlow multi-worker tutorial).

Example:
    >>> strategy = make_strategy("multi_worker")          # reads TF_CONFIG; before any other TF op
    >>> with strategy.scope():
    ...     model = build_model(num_classes=4); model.compile(...)
    >>> with output_folder("runs/ct", chief=is_chief(strategy)) as out:
    ...     model.fit(distributable(train_ds), ...)
"""
from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import tensorflow as tf
from keras.src import tree
from keras.src.backend.tensorflow import trainer as tf_trainer

from imageclf.errors import ModelError

STRATEGIES = ("default", "mirrored", "multi_worker")


class StrategyError(ModelError, ValueError):
    """An unknown strategy name."""

def make_strategy(name: str = "default"):
    """The ``tf.distribute`` strategy called ``name`` (see :data:`STRATEGIES`).

    ``multi_worker`` must be created before TensorFlow runs any op in this process; without
    ``TF_CONFIG`` it is a cluster of one (useful to try the code path on one machine).

    Example:
        >>> make_strategy("default").num_replicas_in_sync
        1
    """

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise StrategyError(f"Unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}.")


def task_of(strategy) -> tuple[str | None, int | None]:
    """``(task type, task id)`` of this process in the cluster, ``(None, None)`` outside one."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return None, None
    return resolver.task_type, resolver.task_id


def is_chief(strategy) -> bool:
    """True for the one process that writes outputs: the ``chief`` task, else ``worker`` 0.

    Example:
        >>> is_chief(make_strategy("default"))
        True
    """
    task_type, task_id = task_of(strategy)
    if task_type is None:
        return True
    cluster = strategy.cluster_resolver.cluster_spec().as_dict()
    return task_type == "chief" or (task_type == "worker" and task_id == 0 and "chief" not in cluster)


def in_multi_worker_mode(strategy) -> bool:
    """True when ``strategy`` spans more than one worker process."""
    extended = getattr(strategy, "extended", None)
    return bool(getattr(extended, "_in_multi_worker_mode", lambda: False)())


def fit_multi_worker_ready(model, strategy) -> None:
    """Let Keras 3 ``model.fit`` run under a multi-worker strategy (no-op otherwise).

    1. The model's symbolic build takes this worker's local first batch (shapes are all it needs)
       instead of all-reducing a nested ``(x, y)`` batch, which the collective strategy cannot.
    2. Per-replica logs (loss, metrics) are averaged over all replicas as scalars (``axis=None``),
       so every worker sees the same ``val_loss`` and takes the same early-stopping decision.
    """
    if not in_multi_worker_mode(strategy):
        return

    def local(value):
        return strategy.experimental_local_results(value)[0] if isinstance(value, tf.distribute.DistributedValues) \
            else value

    def maybe_symbolic_build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tree.map_structure(local, next(batches))
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = maybe_symbolic_build
    original = getattr(tf_trainer.reduce_per_replica, "__wrapped__", tf_trainer.reduce_per_replica)

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and in_multi_worker_mode(strategy):
            return tree.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None) if isinstance(v, tf.distribute.DistributedValues)
                else v, values)
        return original(values, strategy, reduction)

    reduce_per_replica.__wrapped__ = original
    tf_trainer.reduce_per_replica = reduce_per_replica


def global_batch_size(per_replica: int, strategy) -> int:
    """The batch one synchronous step consumes over all replicas of all workers."""
    return per_replica * strategy.num_replicas_in_sync


def distributable(dataset):
    """``dataset`` with sharding by element across workers (in-memory data has no files to shard)."""

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


@contextlib.contextmanager
def output_folder(out: str | Path, *, chief: bool) -> Iterator[Path]:
    """The folder this process writes into: ``out`` for the chief, else a temporary one, removed after.

    Example:
        >>> with output_folder("runs/x", chief=False) as folder:
        ...     folder.name.startswith("worker-")
        True
    """
    if chief:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        yield out
        return
    temporary = Path(tempfile.mkdtemp(prefix="worker-"))
    try:
        yield temporary
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
