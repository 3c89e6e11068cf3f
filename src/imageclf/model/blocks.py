"""config.json's optional blocks as typed objects: ``abstain``, ``calibration``, ``feature_ood``.

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
from imageclf.errors import ModelError

__all__ = ["Calibration", "ConfigError", "FeatureOODSpec", "parse_block"]


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


def feature_ood(data: dict[str, Any]) -> FeatureOODSpec:
    known = {f.name for f in fields(FeatureOODSpec)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"config.json 'feature_ood' has fields this code does not know: {', '.join(unknown)}.")
    try:
        return FeatureOODSpec(method=str(data["method"]), params_file=str(data["params_file"]),
                              params_sha256=data.get("params_sha256"), threshold=float(data["threshold"]),
                              feature_layer=str(data.get("feature_layer", "features")),
                              fitted_on=data.get("fitted_on"), dims=None if data.get("dims") is None else int(data["dims"]))
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"config.json 'feature_ood' cannot be used: {err}") from None


def parse_block(name: str, value: Any) -> Any:
    """The typed object for block ``name`` from its parsed JSON (``None`` and typed values pass)."""
    if value is None or isinstance(value, (AbstainRule, Calibration, FeatureOODSpec)):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"config.json '{name}' must be an object, got {value!r}.")
    return {"abstain": abstain_rule, "calibration": calibration, "feature_ood": feature_ood}[name](value)
