"""config.json as one typed, versioned schema: one reader, one writer, clear errors.

Training writes a :class:`ModelConfig` with :func:`write_config`; the Space, scripts, the
model card and evaluation read it with :func:`read_config`. A config from a newer schema, or
with keys this code does not know, is refused with a message that says what to do: silently
ignoring a field (a scale, an abstention rule) would serve the model without a rule it needs.

Example:
    >>> config = read_config("hub_model")              # folder or path to config.json
    >>> config.input_size, config.labels, config.scale.field_of_view_px
    ((224, 224), ['lung_aca', 'lung_n', 'lung_scc'], 768)
    >>> write_config("out", dataclasses.replace(config, model_name="renamed"))
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from imageclf.core.refusal import AbstainRule
from imageclf.core.scale import NucleusReference, ScaleSpec
from imageclf.core.stain import StainSpec
from imageclf.model.config_blocks import (BLOCKS, Calibration, ConfigError, FeatureOODSpec, RuntimeSpec, TissueGateSpec,
                                          parse_block)

SCHEMA_VERSION = 2
LEGACY_VERSION = 1   # configs written before the schema had a version (no "scale" block)
CONFIG_FILE = "config.json"
# Written into every exported config.json and shown by the Space when a config has none.
DISCLAIMER = (
    "Research and education only. This model is not a medical device and must not be used "
    "to diagnose, treat or triage patients."
)

__all__ = ["SCHEMA_VERSION", "Calibration", "ConfigError", "FeatureOODSpec", "ModelConfig", "TissueGateSpec", "read_json",
           "read_config", "write_config"]


@dataclass(frozen=True)
class ModelConfig:
    """Everything about a model folder that serving must match; see ``docs/`` for each field."""

    model_name: str
    input_size: tuple[int, int]
    labels: list[str]
    schema_version: int = SCHEMA_VERSION
    task: str = "image-classification"
    model_file: str = "model.keras"
    input_unit: str = "tile"             # "tile": large images are cut into fields; else ("image", "slice") resized whole
    channel_order: str = "RGB"
    dtype: str = "uint8"
    value_range: tuple[int, int] = (0, 255)
    benign_classes: list[str] = field(default_factory=list)
    domain: str | None = None
    disclaimer: str | None = None
    dataset: str | None = None
    limitations: str | None = None
    training_manifest: str | None = None
    training_manifest_sha256: str | None = None
    code_version: str | None = None
    keras_version: str | None = None
    training_run: dict[str, Any] = field(default_factory=dict)
    data_layout: dict[str, Any] | None = None
    abstain: AbstainRule | None = None         # colour check + confidence floor (imageclf.core.refusal)
    calibration: Calibration | None = None
    feature_ood: FeatureOODSpec | None = None  # feature-space distance rule (imageclf.model.feature_check)
    scale: ScaleSpec | None = None
    runtime: RuntimeSpec | None = None         # the optimised CPU runtime's file (imageclf.model.openvino_engine)
    stain: StainSpec | None = None             # stain normalisation in front of the engine (imageclf.core.stain)
    tissue_gate: TissueGateSpec | None = None  # lung vs not-lung on the pooled features (imageclf.model.tissue_gate)

    def __post_init__(self) -> None:
        if self.schema_version not in (LEGACY_VERSION, SCHEMA_VERSION):
            raise ConfigError(
                f"config.json has schema_version {self.schema_version}; this code reads {SCHEMA_VERSION}. "
                "Update the Space's code (or re-export the model with this code).")
        size = self.input_size
        if not (len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
            raise ConfigError(f"config.json input_size must be [height, width], got {list(size)!r}.")
        if str(self.channel_order).upper() != "RGB":
            raise ConfigError(f"channel_order {self.channel_order!r} unsupported (RGB only).")
        if self.dtype != "uint8":
            raise ConfigError(f"dtype {self.dtype!r} unsupported (uint8 only).")
        if not self.labels or len(set(self.labels)) != len(self.labels):
            raise ConfigError("config.json labels must be a non-empty list of distinct class ids.")
        if not isinstance(self.input_unit, str) or not self.input_unit:
            raise ConfigError(f"input_unit must be a word such as 'tile' or 'image', got {self.input_unit!r}.")
        # Blocks given as parsed JSON (training passes dicts) become their typed objects here, once.
        for name in BLOCKS:
            object.__setattr__(self, name, parse_block(name, getattr(self, name)))

    @property
    def temperature(self) -> float | None:
        return None if self.calibration is None else self.calibration.temperature

    @property
    def calibrated(self) -> bool:
        """The one fact for "calibrated": config.json records a fitted temperature."""
        return self.temperature is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, ``None`` fields left out (so old readers see what they knew)."""
        data = asdict(self)
        for name in BLOCKS:
            block = getattr(self, name)
            data[name] = None if block is None else block.to_dict()
        data["input_size"] = list(self.input_size)
        data["value_range"] = list(self.value_range)
        ordered = {"schema_version": data.pop("schema_version"), **data}   # the version first, for readers
        return {key: value for key, value in ordered.items() if value is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Validate a parsed config.json; raises :class:`ConfigError` naming the bad field."""
        if not isinstance(data, dict):
            raise ConfigError("config.json must hold a JSON object.")
        version = data.get("schema_version", LEGACY_VERSION)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ConfigError(
                f"config.json has schema_version {version!r}; this code reads up to {SCHEMA_VERSION}. "
                "Update the Space's code (or re-export the model with this code).")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"config.json has fields this code does not know: {', '.join(unknown)} "
                              f"(schema_version {version}).")
        missing = [name for name in ("model_name", "input_size", "labels") if name not in data]
        if missing:
            raise ConfigError(f"config.json lacks required fields: {', '.join(missing)}.")
        values = dict(data)
        values["schema_version"] = version
        try:
            values["input_size"] = tuple(data["input_size"])
            values["value_range"] = tuple(data.get("value_range", (0, 255)))
            values["labels"] = [str(label) for label in data["labels"]]
            values["scale"] = _scale_from_dict(data.get("scale"))
            return cls(**values)
        except ConfigError:
            raise
        except (TypeError, ValueError, KeyError) as err:
            raise ConfigError(f"config.json is not valid: {err}") from None


def read_config(path: str | os.PathLike) -> ModelConfig:
    """Read ``config.json`` from a model folder (or the file itself).

    Example:
        >>> read_config("hub_model").labels
        ['lung_aca', 'lung_n', 'lung_scc']

    Raises:
        ConfigError: missing file, invalid JSON, or a field outside the schema.
    """
    path = Path(path)
    return ModelConfig.from_dict(read_json(path / CONFIG_FILE if path.is_dir() else path))


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON object from a model folder's file; :class:`ConfigError` says what is wrong."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path} not found.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object.")
    return data


def write_config(folder: str | os.PathLike, config: ModelConfig) -> Path:
    """Write ``config.json`` (always the current schema version) and return its path."""
    if config.schema_version != SCHEMA_VERSION:
        raise ConfigError(f"Only schema_version {SCHEMA_VERSION} is written.")
    path = Path(folder) / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path


def _scale_from_dict(data: Any) -> ScaleSpec | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ConfigError("config.json 'scale' must be an object.")
    allowed = {f.name for f in fields(ScaleSpec)}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"config.json 'scale' has fields this code does not know: {', '.join(unknown)}.")
    ref = data.get("reference")
    reference = None
    if ref is not None:
        try:
            reference = NucleusReference(
                sigmas=tuple(float(v) for v in ref["sigmas"]),
                zoom_factors=tuple(float(v) for v in ref["zoom_factors"]),
                curves=tuple(tuple(float(v) for v in curve) for curve in ref["curves"]),
                diameter_px=tuple(float(v) for v in ref["diameter_px"]),  # type: ignore[arg-type]
                tiles=int(ref["tiles"]), estimator=str(ref.get("estimator", "scale-space-v1")))
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"config.json 'scale.reference' is not valid: {err}") from None
    low, high = data.get("relative_size_range", (0.2, 10.0))
    if not 0 < float(low) < 1 < float(high):
        raise ConfigError("config.json 'scale.relative_size_range' must be [low < 1, high > 1].")
    mpp = data.get("microns_per_pixel")
    return ScaleSpec(
        field_of_view_px=None if data.get("field_of_view_px") is None else int(data["field_of_view_px"]),
        microns_per_pixel=None if mpp is None else float(mpp),
        microns_per_pixel_note=data.get("microns_per_pixel_note"),
        reference=reference, relative_size_range=(float(low), float(high)))
