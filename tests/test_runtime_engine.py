"""The optimised CPU runtime (issue 19): served when pinned and intact, Keras otherwise, same decisions.

``hub_model/`` carries ``model_openvino.xml`` + ``.bin`` (``training/export/runtime_export.py
--precision float32``) pinned by sha256 in config.json's ``runtime`` block; why float32 and not
bf16 or int8 is measured in docs/operations.md. The Predictor serves it unless
``MODEL_RUNTIME=keras``; a missing or altered file falls back to Keras with one log line.
Decisions (label and refusal) are held to Keras's on grouped TEST tiles; the speed figures are
``scripts/perf/runtimes.py``'s, not a test's.
"""
from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

from imageclf.core import refusal
from imageclf.core.engine import FieldOutputs
from imageclf.hashing import file_sha256
from imageclf.model.config_blocks import RUNTIME_FILES, ConfigError, parse_block
from imageclf.model.keras_engine import KerasEngine
from imageclf.model.openvino_engine import OpenVinoEngine
from imageclf.model.predictor import Predictor
from imageclf.settings import Settings, SettingsError
from tests.conftest import HUB_MODEL
from training.data.samples import load_split, read_manifest
from training.export.runtime_export import export_runtime
from tests.support.field_rows import one_field

CONFIG = json.loads((HUB_MODEL / "config.json").read_text())


def _linked_copy(dest, *, skip=()):
    """hub_model/ as symlinks (no 30 MB copies), config.json copied so a test can edit it."""
    dest.mkdir()
    for path in HUB_MODEL.iterdir():
        if path.name not in skip and path.name != "config.json":
            (dest / path.name).symlink_to(path.resolve())
    shutil.copy(HUB_MODEL / "config.json", dest / "config.json")
    return dest


def _test_tiles(lung_data, step):
    samples = [s for s in read_manifest(HUB_MODEL / "split_manifest.csv") if s.split == "test"][::step]
    return load_split(lung_data, samples, class_ids=CONFIG["labels"], size=tuple(CONFIG["input_size"]))


def test_the_bundled_model_pins_its_runtime_files():
    block = CONFIG["runtime"]
    assert block["format"] == "openvino" and block["precision"] == "float32"
    assert set(block["sha256"]) == set(RUNTIME_FILES) and block["model_file"] == RUNTIME_FILES[0]
    for name, digest in block["sha256"].items():
        assert file_sha256(HUB_MODEL / name) == digest, name
    assert block["outputs"] == ["probabilities", "features"] and "runtime_export" in block["made_by"]


def test_the_runtime_block_is_typed_and_strict():
    spec = parse_block("runtime", CONFIG["runtime"])
    assert spec.to_dict() == CONFIG["runtime"]
    with pytest.raises(ConfigError, match="'runtime' has fields this code does not know: speed"):
        parse_block("runtime", {**CONFIG["runtime"], "speed": "fast"})
    with pytest.raises(ConfigError, match="'runtime' cannot be used"):
        parse_block("runtime", {"format": "openvino"})


@pytest.mark.slow   # loads the real model twice (about 17 s)
def test_served_by_openvino_unless_keras_is_asked_for():
    served = Predictor(HUB_MODEL)
    assert isinstance(served.engine, OpenVinoEngine) and served.runtime == "openvino float32 (f32)"
    keras_only = Predictor(HUB_MODEL, settings=Settings.from_env({"MODEL_RUNTIME": "keras"}))
    assert keras_only.runtime == "keras" and isinstance(keras_only.engine, KerasEngine)
    with pytest.raises(SettingsError, match="MODEL_RUNTIME='tflite' is not one of auto, keras"):
        Settings.from_env({"MODEL_RUNTIME": "tflite"})


@pytest.mark.slow   # loads the real model (about 10 s each)
@pytest.mark.parametrize("fault", ["missing", "altered"])
def test_a_missing_or_altered_runtime_file_falls_back_to_keras_with_one_line(tmp_path, caplog, fault):
    folder = _linked_copy(tmp_path / "m", skip=("model_openvino.bin",))
    if fault == "altered":
        data = bytearray((HUB_MODEL / "model_openvino.bin").read_bytes())
        data[1000] ^= 0xFF                       # one flipped byte: same size, other weights
        (folder / "model_openvino.bin").write_bytes(bytes(data))
    caplog.set_level(logging.WARNING)
    predictor = Predictor(folder)
    assert predictor.runtime == "keras" and isinstance(predictor.engine, KerasEngine)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("imageclf") and r.levelno >= logging.WARNING]
    expected = "is missing" if fault == "missing" else "does not match the sha256 in config.json"
    assert len(lines) == 1 and "Serving with Keras" in lines[0] and "model_openvino.bin" in lines[0], lines
    assert expected in lines[0]
    # Keras serves a usable answer.
    assert one_field(predictor, np.full((224, 224, 3), 200, np.uint8))["label"] in CONFIG["labels"]


@pytest.mark.slow
def test_served_runtime_decisions_match_keras_on_test_tiles(lung_data):
    """The adoption rule's first clause (docs/operations.md), on every other grouped TEST tile:
    label and refusal as Keras decides them on at least 99.5%."""
    tiles, labels = _test_tiles(lung_data, 2)      # 1,129 grouped TEST tiles
    served, reference = Predictor(HUB_MODEL), Predictor(HUB_MODEL, runtime="keras")
    decided = {}
    for name, predictor in (("served", served), ("keras", reference)):
        # In batches, as the rule runs it: one forward pass over 1,129 tiles holds about 20 GB.
        outputs = FieldOutputs.concat([predictor.engine.run(tiles[i:i + 32]) for i in range(0, len(tiles), 32)],
                                      classes=len(CONFIG["labels"]))
        refused = [r is not None for r in refusal.judge_fields(tiles, outputs.probabilities, outputs.feature_scores,
                                                                predictor.spec.refusal, outputs.gate_scores)]
        decided[name] = (outputs.probabilities, np.array(refused))
    (ps, rs), (pk, rk) = decided["served"], decided["keras"]
    same = (ps.argmax(1) == pk.argmax(1)) & (rs == rk)
    assert same.mean() >= 0.995, same.mean()
    assert np.abs(ps - pk).max() < 1e-3     # float32 in both: the same numbers up to summation order
    assert (ps.argmax(1) == labels).mean() >= 0.95


@pytest.mark.slow
def test_float32_export_reproduces_keras(tmp_path, lung_data):
    folder = _linked_copy(tmp_path / "m", skip=RUNTIME_FILES)
    spec = export_runtime(folder, precision="float32")
    assert json.loads((folder / "config.json").read_text())["runtime"] == spec.to_dict()
    assert spec.precision == "float32" and spec.calibration is None
    tiles, _ = _test_tiles(lung_data, 200)
    served, reference = Predictor(folder), Predictor(folder, runtime="keras")
    assert served.runtime == "openvino float32 (f32)"
    a, b = served.engine.run(tiles), reference.engine.run(tiles)
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-4)
    np.testing.assert_allclose(a.feature_scores, b.feature_scores, rtol=1e-3)
