"""The tissue gate: is this field lung at all, or another organ stained by the same lab?

The feature check (``imageclf.model.feature_check``) asks "like the training tiles?", and that
mostly answers "from the same lab?": it lets 68% of LC25000's own colon tiles through
(docs/tissue-gate.md). The gate is a logistic regression on the same pooled ``features`` (unit
length, standardised), fitted lung against same-lab LC25000 colon plus generated far-OOD images;
its score is P(not lung) per field, and the refusal rule refuses above config.json's threshold
(``Reason.ORGAN``). It refuses colon reliably and other organs only in part (measured there),
which is why it is optional and its refusal sentence says so.

:func:`gate_scores` is the one copy of the math: ``training/gate/arms.py`` (``LogisticGate``) fits
and thresholds with it, this module serves with it, and ``training/gate/gate_export.py``
writes the file this module reads. config.json's ``tissue_gate`` block names the file and pins
its sha256; the file holds float32 arrays only and is read with ``allow_pickle=False``.

Example:
    >>> gate = TissueGate.from_config(config.tissue_gate, folder="hub_model")
    >>> gate.scores(features) > gate.threshold      # features: (N, D) from the "features" layer
    array([False,  True])
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from imageclf.errors import ModelError
from imageclf.hashing import file_sha256
from imageclf.model.feature_check import one_blas_thread, normalise

if TYPE_CHECKING:  # types only
    from imageclf.model.config_blocks import TissueGateSpec

METHOD = "logistic"
# The fitted weights, and the threshold they were thresholded at (checked against config.json's).
REQUIRED = ("mean", "scale", "coef", "intercept", "threshold")
__all__ = ["METHOD", "REQUIRED", "TissueGate", "TissueGateError", "gate_scores", "load_params"]


class TissueGateError(ModelError, ValueError):
    """Gate parameters or features that do not fit together (wrong width, missing array, bad file)."""


def gate_scores(features: np.ndarray, params: Mapping[str, np.ndarray | float]) -> np.ndarray:
    """P(not lung) per row of ``features`` (N, D): sigmoid(((unit(x) - mean) / scale) @ coef + intercept).

    Unit length for the same reason as the feature check (:func:`normalise`); the logit is clipped
    so that a far-off field gives 0 or 1, not an overflow warning.
    """
    mean = np.asarray(params["mean"], np.float64)
    x = normalise(np.atleast_2d(np.asarray(features)))
    if x.shape[1] != mean.shape[0]:
        raise TissueGateError(f"Features have width {x.shape[1]}, the tissue gate expects {mean.shape[0]}.")
    logits = ((x - mean) / np.asarray(params["scale"], np.float64)) @ np.asarray(params["coef"], np.float64)
    logits = logits + float(np.asarray(params["intercept"], np.float64).reshape(()))
    return 1.0 / (1.0 + np.exp(-np.clip(logits, -50, 50)))


def load_params(path: str | Path) -> dict[str, np.ndarray]:
    """Read a gate's ``.npz`` (data only, no pickles) and check its arrays fit together: float32
    vectors ``mean``, ``scale``, ``coef`` of one width, scalars ``intercept`` and ``threshold``."""
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            params = {key: data[key] for key in data.files}
    except (OSError, ValueError) as err:
        raise TissueGateError(f"{path} could not be read: {err}") from None
    missing = sorted(set(REQUIRED) - set(params))
    if missing:
        raise TissueGateError(f"{path} lacks {missing}")
    if any(params[key].dtype != np.float32 for key in REQUIRED):
        raise TissueGateError(f"{path} must hold float32 arrays only.")
    width = params["mean"].shape
    if len(width) != 1 or params["scale"].shape != width or params["coef"].shape != width \
            or params["intercept"].size != 1 or params["threshold"].size != 1:
        raise TissueGateError(f"{path}: mean, scale and coef must be vectors of one width, intercept and "
                              "threshold single numbers.")
    return params


@dataclass(frozen=True)
class TissueGate:
    """The fitted gate as served: the layer to read, the parameters and the threshold."""

    feature_layer: str
    params: dict[str, np.ndarray]
    threshold: float

    @classmethod
    def from_config(cls, block: TissueGateSpec, *, folder: str | Path) -> TissueGate:
        """From config.json's ``tissue_gate`` block; the file must match its sha256 and the
        threshold it was exported with (a threshold edited by hand is not the measured one)."""
        if block.method != METHOD:
            raise TissueGateError(f"tissue_gate method {block.method!r} unknown (this code reads {METHOD}).")
        path = Path(folder) / block.params_file
        if not path.is_file():
            raise TissueGateError(f"{path} not found (named by config.json tissue_gate).")
        if file_sha256(path) != block.params_sha256:
            raise TissueGateError(f"{path} does not match the sha256 in config.json: it is not the fitted file.")
        params = load_params(path)
        stored = float(params["threshold"].reshape(()))
        if stored != float(np.float32(block.threshold)):
            raise TissueGateError(f"config.json tissue_gate threshold {block.threshold} is not the one {path.name} "
                                  f"was exported with ({stored}).")
        return cls(block.feature_layer, params, block.threshold)

    def scores(self, features: np.ndarray) -> np.ndarray:
        """:func:`gate_scores`, with BLAS on the calling thread only, as the feature check scores
        (a pass's score must not leave BLAS threads spinning on a core the next pass needs)."""
        with one_blas_thread():
            return gate_scores(features, self.params)
