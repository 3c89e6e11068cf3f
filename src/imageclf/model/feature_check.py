"""The feature-space check: does the backbone see this field as anything like the training tiles?

The colour check sees colour only and the softmax floor only the head's certainty; colon tissue
or an H&E-tinted photo can pass both. The pooled backbone features (the model's ``features``
layer) separate them: project onto the training features' top principal components and take
the smallest class-conditional Mahalanobis distance under one shared, shrunk covariance (Lee et
al. 2018). Fitting lives in ``training/calibration/feature_ood.py``; scoring is here, used by both.

config.json names the parameters file and its sha256 (``feature_ood``); the file holds float32
arrays only and is read with ``allow_pickle=False``.

Example:
    >>> check = FeatureCheck.from_config(config.feature_ood, folder="hub_model")
    >>> check.scores(features) > check.threshold   # features: (N, D) from the "features" layer
    array([False,  True])
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from threadpoolctl import ThreadpoolController

from imageclf.errors import ModelError

if TYPE_CHECKING:  # types only
    from imageclf.model.config_blocks import FeatureOODSpec

METHOD = "pca-mahalanobis-min-class-v1"
REQUIRED = ("mean", "components", "class_means", "precision", "threshold")
__all__ = ["FeatureCheck", "FeatureOODError", "METHOD", "load_params", "normalise", "one_blas_thread", "score"]


class FeatureOODError(ModelError, ValueError):
    """Parameters or features that do not fit together (wrong width, missing array, bad file)."""

def normalise(features: np.ndarray) -> np.ndarray:
    """Unit-length rows: the direction of a pooled feature vector carries the tissue pattern, its
    length mostly the image's contrast, which should not decide a refusal."""
    features = np.asarray(features, np.float64)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def score(features: np.ndarray, params: Mapping[str, np.ndarray]) -> np.ndarray:
    """Smallest squared Mahalanobis distance to a class mean, per row of ``features`` (N, D).

    Higher means less like training.
    """
    mean = np.asarray(params["mean"], np.float64)
    features = np.atleast_2d(np.asarray(features))
    if features.shape[1] != mean.shape[0]:
        raise FeatureOODError(f"Features have width {features.shape[1]}, the OOD parameters expect {mean.shape[0]}.")
    z = (normalise(features) - mean) @ np.asarray(params["components"], np.float64)
    diff = z[:, None, :] - np.asarray(params["class_means"], np.float64)[None]  # (N, C, dims)
    distances = np.einsum("ncd,de,nce->nc", diff, np.asarray(params["precision"], np.float64), diff)
    return distances.min(axis=1)


def load_params(path: str | Path | io.BytesIO, *, name: str | None = None) -> dict[str, np.ndarray]:
    """Read a parameters ``.npz`` (data only, no pickles) from a path or its bytes."""
    name = name or str(path)
    try:
        with np.load(path if isinstance(path, io.BytesIO) else Path(path), allow_pickle=False) as data:
            params = {key: data[key] for key in data.files}
    except (OSError, ValueError) as err:
        raise FeatureOODError(f"{name} could not be read: {err}") from None
    missing = sorted(set(REQUIRED) - set(params))
    if missing:
        raise FeatureOODError(f"{name} lacks {missing}")
    return params


@dataclass(frozen=True)
class FeatureCheck:
    """The fitted check as served: the layer to read, the parameters and the threshold."""

    feature_layer: str
    params: dict[str, np.ndarray]
    threshold: float

    @classmethod
    def from_config(cls, block: FeatureOODSpec, *, folder: str | Path) -> FeatureCheck:
        """From config.json's ``feature_ood`` block; the parameters file must match its sha256."""
        if block.method != METHOD:
            raise FeatureOODError(f"feature_ood method {block.method!r} unknown (this code reads {METHOD}).")
        path = Path(folder) / block.params_file
        if not path.is_file():
            raise FeatureOODError(f"{path} not found (named by config.json feature_ood).")
        data = path.read_bytes()   # one read: the hash and the arrays come from the same bytes
        if hashlib.sha256(data).hexdigest() != block.params_sha256:
            raise FeatureOODError(f"{path} does not match the sha256 in config.json: it is not the fitted file.")
        return cls(block.feature_layer, load_params(io.BytesIO(data), name=str(path)), block.threshold)

    def scores(self, features: np.ndarray) -> np.ndarray:
        """:func:`score`, with BLAS on the calling thread only (see :func:`one_blas_thread`)."""
        with one_blas_thread():
            return score(features, self.params)


_BLAS_LOCK = threading.Lock()


@functools.cache
def _blas_controller() -> ThreadpoolController:
    return ThreadpoolController()   # inspecting the loaded libraries takes milliseconds: once per process


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run BLAS on the calling thread only, for the length of one score.

    A score is small (N x 1024 by 1024 x 256). OpenBLAS's helper threads finish their share in
    microseconds and then spin, waiting for more work, and on 2 cores that spinning takes a core
    from the next forward pass (OpenVINO's or TensorFlow's threads). Measured with the served
    engine (``scripts/perf/batch_sizes.py``): a pass of 2 fields took 60 ms instead of 30 ms, and
    one of 32 fields 648 ms instead of 502 ms. The lock keeps concurrent scores from restoring the
    thread count under each other.
    """
    with _BLAS_LOCK, _blas_controller().limit(limits=1, user_api="blas"):
        yield
