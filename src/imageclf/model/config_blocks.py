"""config.json's optional blocks as typed objects: ``abstain``, ``calibration``, ``feature_ood``,
``runtime``, ``stain`` (a core type, ``imageclf.core.stain.StainSpec``, parsed here), ``tissue_gate``.

Parsed once, when the config is read (``imageclf.model.config``); everything after reads fields,
never dict keys. A block that is present but unreadable stops the load with a
``ConfigError`` naming it.

Example:
    >>> parse_block("calibration", {"temperature": 1.12, "applied": "inside model.keras"}).temperature
    1.12
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from imageclf.core.refusal import AbstainRule
from imageclf.core.stain import StainSpec
from imageclf.errors import ModelError

__all__ = ["BLOCKS", "RUNTIME_FILES", "Calibration", "ConfigError", "FeatureOODSpec", "RuntimeSpec", "TissueGateSpec",
           "parse_block"]


# The optimised runtime's files (graph + weights), as the export writes them and the Hub serves them.
RUNTIME_FILES = ("model_openvino.xml", "model_openvino.bin")


class ConfigError(ModelError, ValueError):
    """config.json is missing, unreadable or breaks the schema; the message says which field."""


@dataclass(frozen=True)
class Calibration:
    """config.json's ``calibration`` block: the fitted temperature and where it is applied."""

    temperature: float
    applied: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "applied": self.applied}


@dataclass(frozen=True)
class FeatureOODSpec:
    """config.json's ``feature_ood`` block: the feature check's layer, parameter file (pinned by
    sha256) and threshold (``imageclf.model.feature_check`` reads the file; the refusal rule
    compares the score with ``threshold``)."""

    method: str
    params_file: str
    params_sha256: str | None
    threshold: float
    feature_layer: str = "features"
    fitted_on: Any = None
    dims: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {"method": self.method, "feature_layer": self.feature_layer, "params_file": self.params_file,
                "params_sha256": self.params_sha256, "threshold": self.threshold, "fitted_on": self.fitted_on,
                "dims": self.dims}
        return {key: value for key, value in data.items() if value is not None}


@dataclass(frozen=True)
class TissueGateSpec:
    """config.json's ``tissue_gate`` block: the gate's method, layer, parameter file (pinned by
    sha256), threshold on P(not lung) and what it was fitted on (``imageclf.model.tissue_gate``
    reads the file; the refusal rule refuses a field whose score is above ``threshold``). The pin
    is required: a gate is a refusal, and serving an unpinned one would refuse by weights nobody fitted."""

    method: str
    params_file: str
    params_sha256: str
    threshold: float
    feature_layer: str = "features"
    fitted_on: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class RuntimeSpec:
    """config.json's ``runtime`` block: the optimised file made from ``model.keras`` by the same
    export (``training/export/runtime_export.py``), its precision, and the sha256 of each of its
    files; ``imageclf.model.openvino_engine`` serves it only when every file matches."""

    format: str                      # "openvino"
    # "float32" (f32 forced) | "bf16-where-native" (the policy: bf16 where the CPU has it natively and
    # precision_rule passed bf16 on these files, else f32; resolved by imageclf.model.openvino_engine)
    # | "auto" (OpenVINO's pick: bf16 where the CPU has it) | "int8"
    precision: str
    model_file: str
    sha256: dict[str, str]           # file name -> hex sha256, for every file of the runtime
    outputs: tuple[str, ...] = ("probabilities", "features")
    made_by: str | None = None
    calibration: str | None = None   # for int8: what the quantisation was calibrated on
    # The precision rule's record (training/export/precision_rule.py): the declared thresholds, the
    # figures and verdict per candidate, the sha256 of the files it measured, the command.
    precision_rule: dict[str, Any] | None = None

    def rule_passed(self, candidate: str) -> bool | None:
        """The precision rule's verdict on ``candidate`` ("bf16", ...) for THESE files: None when no
        rule is recorded, it did not measure that candidate, or it measured other files."""
        record = self.precision_rule or {}
        verdict = record.get("candidates", {}).get(candidate, {}).get("passed")
        if verdict is None or record.get("sha256") != self.sha256:
            return None
        return bool(verdict)

    def to_dict(self) -> dict[str, Any]:
        data = {"format": self.format, "precision": self.precision, "model_file": self.model_file,
                "sha256": dict(self.sha256), "outputs": list(self.outputs), "made_by": self.made_by,
                "calibration": self.calibration, "precision_rule": self.precision_rule}
        return {key: value for key, value in data.items() if value is not None}


def abstain_rule(data: dict[str, Any]) -> AbstainRule:
    """An ``abstain`` block that is present but unreadable stops the load: serving without the
    safety check it describes would be worse than not starting."""
    try:
        return AbstainRule.from_dict(data)
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"config.json 'abstain' is not a valid rule: {err}") from None


def calibration(data: dict[str, Any]) -> Calibration:
    try:
        return Calibration(temperature=float(data["temperature"]), applied=data.get("applied"))
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"config.json 'calibration' needs a numeric temperature: {err}") from None


def _only_known_fields(name: str, data: dict[str, Any], spec: type) -> None:
    """A field this code does not know stops the load: it may carry a rule this code would skip."""
    unknown = sorted(set(data) - {f.name for f in fields(spec)})
    if unknown:
        raise ConfigError(f"config.json '{name}' has fields this code does not know: {', '.join(unknown)}.")


def feature_ood(data: dict[str, Any]) -> FeatureOODSpec:
    _only_known_fields("feature_ood", data, FeatureOODSpec)
    try:
        return FeatureOODSpec(method=str(data["method"]), params_file=str(data["params_file"]),
                              params_sha256=data.get("params_sha256"), threshold=float(data["threshold"]),
                              feature_layer=str(data.get("feature_layer", "features")),
                              fitted_on=data.get("fitted_on"), dims=None if data.get("dims") is None else int(data["dims"]))
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"config.json 'feature_ood' cannot be used: {err}") from None


def _object_or_none(value: Any, name: str) -> dict[str, Any] | None:
    if value is not None and not isinstance(value, dict):
        raise TypeError(f"{name} must be an object, got {type(value).__name__}")
    return value


def runtime(data: dict[str, Any]) -> RuntimeSpec:
    _only_known_fields("runtime", data, RuntimeSpec)
    try:
        return RuntimeSpec(format=str(data["format"]), precision=str(data["precision"]),
                           model_file=str(data["model_file"]),
                           sha256={str(k): str(v) for k, v in dict(data["sha256"]).items()},
                           outputs=tuple(str(v) for v in data.get("outputs", ("probabilities", "features"))),
                           made_by=data.get("made_by"), calibration=data.get("calibration"),
                           precision_rule=_object_or_none(data.get("precision_rule"), "runtime.precision_rule"))
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"config.json 'runtime' cannot be used: {err}") from None


def tissue_gate(data: dict[str, Any]) -> TissueGateSpec:
    """A threshold below 0.5 would refuse fields the gate itself calls more likely lung than not
    (``LogisticGate.with_threshold`` never goes there); 1 or more would never refuse at all."""
    _only_known_fields("tissue_gate", data, TissueGateSpec)
    if not isinstance(data.get("params_sha256"), str):
        raise ConfigError("config.json 'tissue_gate' needs params_sha256: the sha256 of its params_file.")
    try:
        spec = TissueGateSpec(method=str(data["method"]), params_file=str(data["params_file"]),
                              params_sha256=str(data["params_sha256"]), threshold=float(data["threshold"]),
                              feature_layer=str(data.get("feature_layer", "features")), fitted_on=data.get("fitted_on"))
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"config.json 'tissue_gate' cannot be used: {err}") from None
    if not 0.5 <= spec.threshold < 1.0:
        raise ConfigError(f"config.json 'tissue_gate' threshold {spec.threshold} is not a P(not lung) in [0.5, 1).")
    return spec


def stain(data: dict[str, Any]) -> StainSpec:
    """Stain normalisation is part of the model: a block that cannot be read stops the load."""
    _only_known_fields("stain", data, StainSpec)
    try:
        values = dict(data)
        values["matrix"] = tuple(tuple(float(v) for v in row) for row in data["matrix"])
        values["max_concentrations"] = tuple(float(v) for v in data["max_concentrations"])
        return StainSpec(**values)
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"config.json 'stain' cannot be used: {err}") from None


BLOCKS = {"abstain": abstain_rule, "calibration": calibration, "feature_ood": feature_ood, "runtime": runtime,
          "stain": stain, "tissue_gate": tissue_gate}


def parse_block(name: str, value: Any) -> Any:
    """The typed object for block ``name`` from its parsed JSON (``None`` and typed values pass)."""
    if value is None or isinstance(value, (AbstainRule, Calibration, FeatureOODSpec, RuntimeSpec, StainSpec,
                                           TissueGateSpec)):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"config.json '{name}' must be an object, got {value!r}.")
    return BLOCKS[name](value)
