"""The benchmark's other runtimes (issue 19): ONNX Runtime and LiteRT graphs of the bundled model.

``scripts/perf/runtimes.py`` compares them with Keras and OpenVINO; these tests hold the float32
exports to the contract the comparison assumes (uint8 in; probabilities and pooled features out,
equal to Keras's), and the tools that print the serving figures to printing them.
Speed is the benchmark's business, not a test's.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from imageclf.model.keras_engine import with_features
from imageclf.model.predictor import Predictor
from scripts.perf import batch_sizes, load_test, other_runtimes
from tests.conftest import HUB_MODEL
from training.export.runtime_export import to_saved_model


@pytest.mark.slow   # two conversions of the real model (about a minute)
def test_float32_onnx_and_litert_reproduce_keras(tmp_path):
    predictor = Predictor(HUB_MODEL, runtime="keras")
    both = with_features(predictor.model, predictor.feature_check.feature_layer)
    saved = to_saved_model(both, tmp_path / "saved_model")
    assert other_runtimes.export_all(saved, tmp_path, None) == {}
    tiles = np.random.default_rng(3).integers(0, 256, (5, 224, 224, 3), dtype=np.uint8)
    probabilities, features = both.predict_on_batch(tiles)
    for name in ("onnxruntime-f32", "litert-f32"):
        call, megabytes = other_runtimes.load(name, tmp_path)
        assert 20 < megabytes < 40, name
        for batch in (tiles, tiles[:1]):   # LiteRT keeps one interpreter per batch size
            got_p, got_f = call(batch)
            np.testing.assert_allclose(got_p, probabilities[:len(batch)], atol=1e-4, err_msg=name)
            np.testing.assert_allclose(got_f, features[:len(batch)], rtol=1e-3, atol=1e-3, err_msg=name)


def test_a_candidate_whose_package_is_missing_is_reported_not_raised(tmp_path, monkeypatch):
    def missing(*_args):
        raise ImportError("No module named 'onnxruntime'")
    monkeypatch.setattr(other_runtimes, "onnx_f32", missing)
    monkeypatch.setattr(other_runtimes, "litert", missing)
    failed = other_runtimes.export_all(tmp_path / "no_saved_model", tmp_path, None)
    assert failed == {"onnxruntime-f32": "ImportError: No module named 'onnxruntime'",
                      "litert-f32": "ImportError: No module named 'onnxruntime'"}


def test_batch_size_table_has_every_size(tiny_folder, capsys):
    assert batch_sizes.main(["--model", str(tiny_folder), "--rounds", "1", "--fields", "2"]) == 0
    out = capsys.readouterr().out
    for size in batch_sizes.SIZES:
        assert re.search(rf"^\| {size} \| \d+\.\d \| \d+\.\d \|$", out, re.MULTILINE), (size, out)


@pytest.mark.slow   # starts a no-op app beside the tiny Space
def test_load_test_compares_with_a_noop_peer(tiny_space, capsys):
    assert load_test.main(["--url", tiny_space, "--clients", "3", "--requests", "2", "--noop-peer"]) == 0
    out = capsys.readouterr().out
    assert out.count("failures: 0 of 6") == 2, out
    assert re.search(r"Space / no-op: p50 \d+\.\d\d x, p95 \d+\.\d\d x", out), out
