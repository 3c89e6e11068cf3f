"""config.json's typed schema: one reader, one writer, clear refusals."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from imageclf.model.config import SCHEMA_VERSION, ConfigError, ModelConfig, read_config, write_config
from tests.conftest import HUB_MODEL, ROOT

EXPORTS = sorted((ROOT / "training" / "exports").glob("*/config.json"))


@pytest.mark.parametrize("path", [HUB_MODEL / "config.json", *EXPORTS], ids=lambda p: p.parent.name)
def test_every_committed_model_folder_is_current_schema_and_round_trips(path, tmp_path):
    config = read_config(path)
    assert config.schema_version == SCHEMA_VERSION
    write_config(tmp_path, config)
    assert json.loads((tmp_path / "config.json").read_text()) == json.loads(path.read_text())


def test_the_lung_model_declares_its_scale():
    scale = read_config(HUB_MODEL).scale
    assert scale.field_of_view_px == 768
    # Estimated from nuclei of TCGA tiles of known scale (scripts/estimate_model_mpp.py), with its spread.
    assert 0.25 < scale.microns_per_pixel < 0.5 and "LC25000" in scale.microns_per_pixel_note
    assert "IQR" in scale.microns_per_pixel_note
    median, p10, p90 = scale.reference.diameter_px
    assert p10 < median < p90 and 4 < median < 30   # nuclei of a 224 px LC25000 tile, in pixels
    assert scale.reference.zoom_factors[0] == 1.0 and len(scale.reference.curves) == len(scale.reference.zoom_factors)


def _minimal(**extra) -> dict:
    return {"model_name": "m", "input_size": [32, 32], "labels": ["a", "b"], **extra}


@pytest.mark.parametrize("data, message", [
    (_minimal(schema_version=SCHEMA_VERSION + 1), "Update the Space"),
    (_minimal(surprise=1), "surprise"),
    ({"model_name": "m", "labels": ["a"]}, "input_size"),
    (_minimal(input_size=[32]), "input_size"),
    (_minimal(labels=["a", "a"]), "distinct"),
    (_minimal(dtype="float32"), "uint8"),
    (_minimal(channel_order="BGR"), "RGB"),
    (_minimal(scale={"field_of_view_px": 10, "wrong": 1}), "wrong"),
    (_minimal(scale={"field_of_view_px": 10, "reference": {"sigmas": [1.0]}}), "scale.reference"),
    (_minimal(scale={"relative_size_range": [2, 3]}), "relative_size_range"),
])
def test_invalid_configs_are_refused_naming_the_field(data, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_dict(data)


def test_legacy_config_without_version_is_read_and_written_as_current(tmp_path):
    legacy = ModelConfig.from_dict(_minimal())
    assert legacy.schema_version == 1 and legacy.scale is None
    with pytest.raises(ConfigError, match="Only schema_version"):
        write_config(tmp_path, legacy)
    write_config(tmp_path, replace(legacy, schema_version=SCHEMA_VERSION))
    assert read_config(tmp_path).schema_version == SCHEMA_VERSION


def test_unreadable_files_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        read_config(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_config(tmp_path)
