"""The OpenVINO field engine: the same outputs as Keras, from the optimised file in the folder.

``training/export/runtime_export.py`` writes ``model_openvino.xml`` + ``.bin`` from ``model.keras``
(a graph with two outputs, probabilities and the pooled features the feature check and the tissue
gate read, so one pass gives all) and pins both files by sha256 in config.json's ``runtime`` block. This module
loads them only when they match that block: a missing, altered or unloadable file raises
:class:`RuntimeFileError`, and the predictor then serves with Keras and says so in one log line.
Grad-CAM never uses this engine (it needs gradients; ``imageclf.model.explain`` runs on Keras).

Example:
    >>> engine = OpenVinoEngine.from_folder("hub_model", read_config("hub_model").runtime, feature_check,
    ...                                     tissue_gate=None)
    >>> engine.run(np.zeros((4, 224, 224, 3), np.uint8)).probabilities.shape
    (4, 3)
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from imageclf.core.engine import FieldOutputs
from imageclf.errors import ModelError
from imageclf.hashing import file_sha256
from imageclf.model.config_blocks import RuntimeSpec
from imageclf.model.feature_check import FeatureCheck
from imageclf.model.tissue_gate import TissueGate

__all__ = ["OpenVinoEngine", "RuntimeFileError"]


class RuntimeFileError(ModelError, RuntimeError):
    """The optimised runtime cannot be used (not installed, file missing or not the pinned one)."""


class OpenVinoEngine:
    """Runs the exported OpenVINO graph (RGB uint8 in; probabilities and features out) on the CPU."""

    def __init__(self, xml_path: str | os.PathLike, feature_check: FeatureCheck | None, *, precision: str,
                 tissue_gate: TissueGate | None = None) -> None:
        try:
            import openvino as ov  # deferred: an optional runtime; Keras serves when it is absent
        except ImportError:
            raise RuntimeFileError("the openvino package is not installed") from None
        core = ov.Core()
        # f32 means f32: OpenVINO would otherwise pick bf16 by itself on CPUs that have it
        # ("auto" leaves that choice to OpenVINO; int8 graphs run their float parts as it picks).
        config: dict[str, object] = {"PERFORMANCE_HINT": "LATENCY"}
        if precision == "float32":
            config["INFERENCE_PRECISION_HINT"] = "f32"
        try:
            self._compiled = core.compile_model(core.read_model(str(xml_path)), "CPU", config)
        except RuntimeError as err:
            raise RuntimeFileError(f"OpenVINO cannot load {Path(xml_path).name}: {str(err).splitlines()[0]}") from None
        if len(self._compiled.outputs) != 2:
            raise RuntimeFileError(f"{Path(xml_path).name} has {len(self._compiled.outputs)} outputs, not 2 "
                                   "(probabilities, features)")
        self.feature_check = feature_check
        self.tissue_gate = tissue_gate
        # What the CPU plugin actually computes in (bf16 or f32 for float layers): "auto" resolved.
        self.arithmetic = self._compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        self._request = self._compiled.create_infer_request()
        self._lock = threading.Lock()   # one infer request; the Space runs two events at a time

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, spec: RuntimeSpec, feature_check: FeatureCheck | None, *,
                    tissue_gate: TissueGate | None = None) -> OpenVinoEngine:
        """The engine for a model folder's ``runtime`` block, after checking both files' sha256."""
        folder = Path(folder)
        if spec.format != "openvino":
            raise RuntimeFileError(f"runtime format {spec.format!r} is not one this code runs")
        for name, expected in spec.sha256.items():
            path = folder / name
            if not path.is_file():
                raise RuntimeFileError(f"{name} is missing")
            if file_sha256(path) != expected:
                raise RuntimeFileError(f"{name} does not match the sha256 in config.json")
        return cls(folder / spec.model_file, feature_check, precision=spec.precision, tissue_gate=tissue_gate)

    def run(self, fields: np.ndarray) -> FieldOutputs:
        """Probabilities (N x C float64) and each check's scores (N float64, or None) for N fields."""
        probabilities, features = self.forward(fields)
        return FieldOutputs.from_pass(probabilities, features, self.feature_check, self.tissue_gate)

    def forward(self, fields: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The graph's two outputs for N fields: probabilities (float64) and pooled features."""
        fields = np.ascontiguousarray(fields, dtype=np.uint8)
        with self._lock:
            self._request.infer({0: fields})
            return (np.array(self._request.get_output_tensor(0).data, dtype=np.float64),
                    np.array(self._request.get_output_tensor(1).data, dtype=np.float32))
