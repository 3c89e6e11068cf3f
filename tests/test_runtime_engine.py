"""The optimised CPU runtime (issue 19): served when pinned and intact, Keras otherwise, same decisions.

``hub_model/`` carries ``model_openvino.xml`` + ``.bin`` (``training/export/runtime_export.py``)
pinned by sha256 in config.json's ``runtime`` block; its precision (float32, or bf16 where the CPU
has it natively) is the precision rule's choice, recorded in the block
(``training/export/precision_rule.py``; its own tests are ``tests/test_precision_rule.py``). The
Predictor serves it unless ``MODEL_RUNTIME=keras``; a missing or altered file falls back to Keras
with one log line. Decisions (label and refusal) are held to Keras's on grouped TEST tiles; the
speed figures are ``scripts/perf/runtimes.py``'s, not a test's.
"""
from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

from imageclf.hashing import file_sha256
from imageclf.model.config_blocks import RUNTIME_FILES, ConfigError, parse_block
from imageclf.model.keras_engine import KerasEngine
from imageclf.model.openvino_engine import BF16_POLICY, OpenVinoEngine, native_bf16, resolve_precision
from imageclf.model.predictor import Predictor
from imageclf.settings import Settings, SettingsError
from tests.conftest import HUB_MODEL
from training.data.samples import load_split, read_manifest
from training.export.precision_measure import agreement, served_decisions
from training.export.precision_rule import DECISIONS_MIN, ECE_MAX
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
    assert block["format"] == "openvino" and block["precision"] in ("float32", BF16_POLICY)
    assert set(block["sha256"]) == set(RUNTIME_FILES) and block["model_file"] == RUNTIME_FILES[0]
    for name, digest in block["sha256"].items():
        assert file_sha256(HUB_MODEL / name) == digest, name
    assert block["outputs"] == ["probabilities", "features"] and "runtime_export" in block["made_by"]


def test_the_bundled_precision_is_the_precision_rules_choice_on_these_files():
    """training/export/precision_rule.py measured these very files and chose the block's precision."""
    block, rule = CONFIG["runtime"], CONFIG["runtime"]["precision_rule"]
    assert rule["sha256"] == block["sha256"] and rule["choice"] == block["precision"]
    assert rule["candidates"]["float32"]["passed"]
    assert (block["precision"] == BF16_POLICY) == rule["candidates"]["bf16"]["passed"]
    assert rule["thresholds"]["decisions_equal_min"] == 0.995 and rule["thresholds"]["alpha"] == 0.01
    assert rule["made_by"].startswith("python -m training.export.precision_rule hub_model")


def test_the_runtime_block_is_typed_and_strict():
    spec = parse_block("runtime", CONFIG["runtime"])
    assert spec.to_dict() == CONFIG["runtime"]
    with pytest.raises(ConfigError, match="'runtime' has fields this code does not know: speed"):
        parse_block("runtime", {**CONFIG["runtime"], "speed": "fast"})
    with pytest.raises(ConfigError, match="'runtime' cannot be used"):
        parse_block("runtime", {"format": "openvino"})


@pytest.mark.slow   # loads the real model twice (about 17 s)
def test_served_by_openvino_unless_keras_is_asked_for():
    served, spec = Predictor(HUB_MODEL), parse_block("runtime", CONFIG["runtime"])
    assert isinstance(served.engine, OpenVinoEngine)
    # The block's precision as resolved on this CPU: bf16 only with native bf16 and the rule passed.
    assert served.engine.precision == resolve_precision(spec.precision, native=native_bf16(),
                                                        rule_passed=spec.rule_passed("bf16"))
    assert served.runtime == served.engine.description   # what About, the logs and summary.json show
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
    """The precision rule's first two clauses (training/export/precision_rule.py), on every other
    grouped TEST tile: decisions (label and refusal) as Keras makes them on at least 99.5%; ECE at most 2%."""
    tiles, labels = _test_tiles(lung_data, 2)      # 1,129 grouped TEST tiles
    served, reference = Predictor(HUB_MODEL), Predictor(HUB_MODEL, runtime="keras")
    figures = agreement(served_decisions(reference, served.engine, tiles),
                        served_decisions(reference, reference.engine, tiles), labels)
    assert figures["decision"] >= DECISIONS_MIN, figures
    assert figures["ece"] <= ECE_MAX and figures["accuracy"] >= 0.95, figures
    if served.engine.arithmetic == "f32":     # float32 in both: the same numbers up to summation order
        assert figures["max_dp"] < 1e-3, figures


@pytest.mark.slow
def test_float32_export_reproduces_keras(tmp_path, lung_data):
    folder = _linked_copy(tmp_path / "m", skip=RUNTIME_FILES)
    spec = export_runtime(folder, precision="float32")
    assert json.loads((folder / "config.json").read_text())["runtime"] == spec.to_dict()
    assert spec.precision == "float32" and spec.calibration is None
    tiles, _ = _test_tiles(lung_data, 200)
    served, reference = Predictor(folder), Predictor(folder, runtime="keras")
    assert served.runtime == served.engine.description and served.runtime.startswith("openvino float32 (f32")
    assert served.engine.arithmetic == "f32"
    a, b = served.engine.run(tiles), reference.engine.run(tiles)
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-4)
    np.testing.assert_allclose(a.feature_scores, b.feature_scores, rtol=1e-3)
