"""Export a fitted tissue gate into a model folder: its parameters file and its config.json block.

The gate is fitted and thresholded in ``training/gate/arms.py`` (``LogisticGate``); serving reads
it with ``imageclf.model.tissue_gate``. This step is the one bridge between them: it writes
``LogisticGate.arrays()`` (exactly what the served loader reads, float32, no pickles) and returns
the ``tissue_gate`` block that pins that file by sha256, already checked by the block's own parser,
so a gate this step exports is one serving accepts.

Example:
    >>> gate = LogisticGate.fit(lung, not_lung).with_threshold(val_lung)
    >>> block = export_tissue_gate("hub_model", gate, fitted_on="LC25000 lung TRAIN vs LC25000 colon + far-OOD")
    >>> write_config("hub_model", dataclasses.replace(read_config("hub_model"), tissue_gate=block))
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from imageclf.hashing import file_sha256
from imageclf.model.config_blocks import parse_block
from imageclf.model.tissue_gate import METHOD
from training.gate.arms import GateError, LogisticGate

PARAMS_FILE = "tissue_gate.npz"

__all__ = ["PARAMS_FILE", "export_tissue_gate"]


def export_tissue_gate(folder: str | Path, gate: LogisticGate, *, fitted_on: str, params_file: str = PARAMS_FILE,
                       feature_layer: str = "features") -> dict[str, Any]:
    """Write ``gate``'s parameters to ``folder/params_file`` and return config.json's ``tissue_gate``
    block for it (``fitted_on``: free text saying what the two sides were)."""
    if not math.isfinite(gate.threshold):
        raise GateError("The gate has no threshold yet: set it on validation (LogisticGate.with_threshold).")
    path = Path(folder) / params_file
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:   # a handle: np.savez would add ".npz" to a name without it
        np.savez(handle, **gate.arrays())
    block = {"method": METHOD, "params_file": params_file, "params_sha256": file_sha256(path),
             "threshold": float(gate.threshold), "feature_layer": feature_layer, "fitted_on": fitted_on}
    parse_block("tissue_gate", block)   # ConfigError here, not at the Space's start
    return block
