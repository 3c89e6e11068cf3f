"""The OpenVINO field engine: the same outputs as Keras, from the optimised file in the folder.

``training/export/runtime_export.py`` writes ``model_openvino.xml`` + ``.bin`` from ``model.keras``
(a graph with two outputs, probabilities and the pooled features the feature check and the tissue
gate read, so one pass gives all) and pins both files by sha256 in config.json's ``runtime`` block. This module
loads them only when they match that block: a missing, altered or unloadable file raises
:class:`RuntimeFileError`, and the predictor then serves with Keras and says so in one log line.
Grad-CAM never uses this engine (it needs gradients; ``imageclf.model.explain`` runs on Keras).

The block's ``precision`` is resolved here, once, at load (:func:`resolve_precision`), and said in one
log line and in :attr:`OpenVinoEngine.description`: ``"float32"`` forces f32 arithmetic; the policy
``"bf16-where-native"`` computes in bf16 only where the CPU has it natively (OpenVINO's
``OPTIMIZATION_CAPABILITIES`` lists BF16: AVX512_BF16 or AMX) and the block's ``precision_rule``
(``training/export/precision_rule.py``) passed bf16 on these very files, and in f32 elsewhere.

Example:
    >>> engine = OpenVinoEngine.from_folder("hub_model", read_config("hub_model").runtime, feature_check,
    ...                                     tissue_gate=None)
    >>> engine.run(np.zeros((4, 224, 224, 3), np.uint8)).probabilities.shape
    (4, 3)
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imageclf.core.engine import FieldOutputs
from imageclf.errors import ModelError
from imageclf.hashing import file_sha256
from imageclf.model.config_blocks import RuntimeSpec
from imageclf.model.feature_check import FeatureCheck
from imageclf.model.tissue_gate import TissueGate

__all__ = ["BF16_POLICY", "OpenVinoEngine", "Precision", "RuntimeFileError", "cpu_flags", "native_bf16",
           "resolve_precision"]

log = logging.getLogger(__name__)

# The runtime block's precision policy: bf16 where the CPU has it natively and the precision rule passed it.
BF16_POLICY = "bf16-where-native"
# /proc/cpuinfo flags that give native bf16 arithmetic, the one named in the description first.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


class RuntimeFileError(ModelError, RuntimeError):
    """The optimised runtime cannot be used (not installed, file missing or not the pinned one)."""


@dataclass(frozen=True)
class Precision:
    """How the CPU plugin is asked to compute: ``hint`` (its ``INFERENCE_PRECISION_HINT``, or None:
    OpenVINO picks), ``name`` (what is served: float32, bf16, int8, auto) and ``why`` (for people)."""

    hint: str | None
    name: str
    why: str | None = None


def native_bf16(capabilities: list[str] | None = None, flags: list[str] | None = None) -> str | None:
    """The CPU's native bf16 feature (``"amx_bf16"``, ``"avx512_bf16"``; ``"BF16"`` where OpenVINO
    reports it but /proc/cpuinfo does not name it), or None. OpenVINO decides: it reports BF16 in the
    CPU's ``OPTIMIZATION_CAPABILITIES`` only where it runs bf16 natively. Both arguments are for
    tests (None: ask OpenVINO, read /proc/cpuinfo)."""
    if capabilities is None:
        import openvino as ov  # deferred: an optional runtime, imported where it is used

        capabilities = list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    if "BF16" not in capabilities:
        return None
    flags = cpu_flags() if flags is None else flags
    return next((flag for flag in BF16_FLAGS if flag in flags), "BF16")


def cpu_flags() -> list[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    info = Path("/proc/cpuinfo")
    text = info.read_text() if info.is_file() else ""
    return next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])


def resolve_precision(precision: str, *, native: str | None, rule_passed: bool | None) -> Precision:
    """The runtime block's ``precision`` on this CPU. ``native``: :func:`native_bf16`'s answer;
    ``rule_passed``: the precision rule's verdict on bf16 for these files (None: none recorded).

    ``"float32"`` -> f32 (saying why when the rule failed bf16 on these files); ``"bf16-where-native"``
    -> bf16 only with native bf16 and a passed rule, else f32; ``"bf16"`` -> bf16 forced (what the
    precision rule measures; never the export's); ``"auto"`` and ``"int8"`` -> OpenVINO's pick.
    """
    if precision == "float32" and rule_passed is not False:
        return Precision("f32", "float32", "f32")
    if precision == "bf16":
        return Precision("bf16", "bf16", "bf16 forced")
    if precision in ("auto", "int8"):
        return Precision(None, precision)
    if precision not in ("float32", BF16_POLICY):
        raise RuntimeFileError(f"runtime precision {precision!r} is not one this code runs")
    if native is None:
        return Precision("f32", "float32", "f32; no native bf16")
    if rule_passed is None:
        return Precision("f32", "float32", f"f32; native {native}, but no precision rule recorded for these files")
    if not rule_passed:
        return Precision("f32", "float32", f"f32; native {native}, but the precision rule failed bf16")
    return Precision("bf16", "bf16", f"native {native}; precision rule passed")


class OpenVinoEngine:
    """Runs the exported OpenVINO graph (RGB uint8 in; probabilities and features out) on the CPU."""

    def __init__(self, xml_path: str | os.PathLike, feature_check: FeatureCheck | None, *, precision: str,
                 tissue_gate: TissueGate | None = None, rule_passed: bool | None = None,
                 native: str | None | bool = True) -> None:
        """``rule_passed``: the precision rule's verdict on bf16 (for the bf16 policy); ``native``:
        the CPU's native bf16 feature or None, True to ask the CPU (:func:`native_bf16`)."""
        try:
            import openvino as ov  # deferred: an optional runtime; Keras serves when it is absent
        except ImportError:
            raise RuntimeFileError("the openvino package is not installed") from None
        core = ov.Core()
        if native is True:
            native = native_bf16(list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")))
        # f32 means f32: OpenVINO would otherwise pick bf16 by itself on CPUs that have it
        # ("auto" leaves that choice to OpenVINO; int8 graphs run their float parts as it picks).
        self.precision = resolve_precision(precision, native=native or None, rule_passed=rule_passed)
        config: dict[str, object] = {"PERFORMANCE_HINT": "LATENCY"}
        if self.precision.hint is not None:
            config["INFERENCE_PRECISION_HINT"] = self.precision.hint
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
        log.info("OpenVINO runs %s in %s (runtime precision %r; %s).", Path(xml_path).name, self.arithmetic,
                 precision, self.precision.why or "OpenVINO's pick for this CPU")

    @property
    def description(self) -> str:
        """What serves, for people (About, summary.json): e.g. ``openvino bf16 (native avx512_bf16;
        precision rule passed)``, ``openvino float32 (f32; no native bf16)``, ``openvino int8 (bf16)``."""
        return f"openvino {self.precision.name} ({self.precision.why or self.arithmetic})"

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
        return cls(folder / spec.model_file, feature_check, precision=spec.precision, tissue_gate=tissue_gate,
                   rule_passed=spec.rule_passed("bf16"))

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
