"""The tissue gate as served: config.json's tissue_gate block, its file, its refusal, both engines.

On the tiny model: a real ``LogisticGate`` (``training/gate/arms.py``) fitted on its pooled
``features`` with reddish noise as "lung" and greenish noise as "not lung", exported by
``training/gate/gate_export.py``, loaded by ``imageclf.model.tissue_gate``.
"""
from __future__ import annotations

import json
import shutil

import keras
import numpy as np
import pytest

from imageclf.core.engine import FieldOutputs
from imageclf.core.refusal import AbstainRule, Reason, RefusalRule, judge_field, judge_fields
from imageclf.hashing import file_sha256
from imageclf.model.config import read_config
from imageclf.model.config_blocks import RUNTIME_FILES, RuntimeSpec
from imageclf.model.keras_engine import KerasEngine
from imageclf.model.predictor import ModelFolderError, Predictor
from imageclf.model.tissue_gate import REQUIRED, TissueGate, load_params
from tests.support.tiny_model import write_tiny_model_folder
from training.gate.gate_export import export_tissue_gate
from training.gate.arms import LogisticGate


def _noise(seed: int, n: int, channel: int) -> np.ndarray:
    """Noise images lifted in one channel: 0 reddish ("lung" here), 1 greenish ("not lung")."""
    images = np.random.default_rng(seed).integers(0, 120, (n, 64, 64, 3), dtype=np.uint8)
    images[..., channel] += 120
    return images


def _features(folder, images: np.ndarray) -> np.ndarray:
    model = keras.saving.load_model(folder / "model.keras", compile=False)
    return np.asarray(keras.Model(model.inputs, model.get_layer("features").output).predict(images, verbose=0))


def _config(folder) -> dict:
    return json.loads((folder / "config.json").read_text())


def _write_config(folder, config: dict) -> None:
    (folder / "config.json").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def plain_folder(tmp_path_factory):
    return write_tiny_model_folder(tmp_path_factory.mktemp("plain") / "model")


@pytest.fixture(scope="module")
def gate(plain_folder) -> LogisticGate:
    lung, other = _features(plain_folder, _noise(0, 60, 0)), _features(plain_folder, _noise(1, 60, 1))
    return LogisticGate.fit(lung, other).with_threshold(_features(plain_folder, _noise(2, 40, 0)))


@pytest.fixture(scope="module")
def gated_folder(tmp_path_factory, gate):
    folder = tmp_path_factory.mktemp("gated") / "model"
    block = export_tissue_gate(folder, gate, fitted_on="reddish vs greenish noise (test)")
    return write_tiny_model_folder(folder, config_extra={"tissue_gate": block})


@pytest.fixture(scope="module")
def predictor(gated_folder) -> Predictor:
    return Predictor(gated_folder)


@pytest.fixture
def copy_of(tmp_path, gated_folder):
    def copy():
        return shutil.copytree(gated_folder, tmp_path / "copy")
    return copy


def test_the_gate_refuses_with_its_own_code_for_one_field_and_for_tiles(predictor):
    red, green = _noise(3, 1, 0)[0], _noise(4, 1, 1)[0]
    answer = predictor.analyze(green, scale="native").to_json()
    assert answer["abstained"] and answer["abstain_code"] == "organ" == Reason.ORGAN.value
    assert answer["abstain_reason"] == Reason.ORGAN.sentence() and "lung" in answer["abstain_reason"]
    assert predictor.analyze(red, scale="native").to_json()["abstain_code"] is None
    assert predictor.classify_fields([red, green, red]).codes() == [None, "organ", None]
    assert predictor.spec.refusal.gate_threshold == predictor.tissue_gate.threshold >= 0.5


def test_the_served_gate_scores_as_the_trained_one(gated_folder, gate):
    """LogisticGate -> export -> config.json -> TissueGate: the same scores (float32 file, float64 fit)."""
    assert set(gate.arrays()) == set(REQUIRED)
    served = TissueGate.from_config(read_config(gated_folder).tissue_gate, folder=gated_folder)
    assert served.threshold == gate.threshold and served.feature_layer == "features"
    features = _features(gated_folder, np.concatenate([_noise(5, 20, 0), _noise(6, 20, 1)]))
    np.testing.assert_allclose(served.scores(features), gate.scores(features), rtol=0, atol=1e-6)
    assert (served.scores(features)[:20] <= served.threshold).all() and (served.scores(features)[20:] > 0.5).all()
    params = load_params(gated_folder / "tissue_gate.npz")
    assert all(params[key].dtype == np.float32 for key in REQUIRED)


def test_one_pass_fills_the_gate_scores(predictor):
    assert isinstance(predictor.engine, KerasEngine) and predictor.engine.tissue_gate is predictor.tissue_gate
    outputs = predictor.engine.run(_noise(7, 3, 1))
    assert outputs.feature_scores is None and outputs.gate_scores.shape == (3,)
    parts = FieldOutputs.concat(outputs.split(), classes=3)
    np.testing.assert_array_equal(parts.gate_scores, outputs.gate_scores)
    np.testing.assert_array_equal(parts.probabilities, outputs.probabilities)


def test_a_model_without_a_gate_behaves_as_before(plain_folder, predictor):
    plain = Predictor(plain_folder)
    assert plain.tissue_gate is None and plain.spec.refusal.gate_threshold is None
    fields = np.concatenate([_noise(8, 2, 0), _noise(9, 2, 1)])
    outputs = plain.engine.run(fields)
    assert outputs.gate_scores is None and outputs.feature_scores is None
    assert plain.classify_fields(list(fields)).codes() == [None] * 4
    np.testing.assert_allclose(plain.engine.run(fields).probabilities, predictor.engine.run(fields).probabilities)


def test_the_field_order_is_colour_feature_gate_confidence():
    rule = RefusalRule(abstain=AbstainRule(method="softmax", min_confidence=0.6), feature_threshold=10.0,
                       gate_threshold=0.5)
    rgb, sure, unsure = np.zeros((4, 4, 3), np.uint8), np.array([0.9, 0.1]), np.array([0.5, 0.5])
    assert judge_field(rgb, unsure, 11.0, rule, 0.9) is Reason.FEATURE
    assert judge_field(rgb, unsure, 9.0, rule, 0.9) is Reason.ORGAN
    assert judge_field(rgb, unsure, 9.0, rule, 0.1) is Reason.CONFIDENCE
    assert judge_field(rgb, sure, 9.0, rule, 0.1) is None
    assert judge_field(rgb, sure, 9.0, RefusalRule(feature_threshold=10.0), 0.9) is None   # no gate: no refusal
    with pytest.raises(ValueError, match="no gate scores"):   # an engine that lost them is an error
        judge_fields(rgb[None], sure[None], np.array([9.0]), rule)


def test_a_gate_file_that_is_not_the_fitted_one_stops_the_load(copy_of):
    folder = copy_of()
    params = load_params(folder / "tissue_gate.npz")
    params["intercept"] = np.array(-1e3, np.float32)   # a swapped file that would never refuse
    np.savez(folder / "tissue_gate.npz", **params)
    with pytest.raises(ModelFolderError, match=r"^config.json 'tissue_gate' cannot be used: .*sha256") as err:
        Predictor(folder)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("change, message", [
    ({"speed": "fast"}, "'tissue_gate' has fields this code does not know: speed"),
    ({"params_sha256": None}, "'tissue_gate' needs params_sha256"),
    ({"method": "forest"}, "method 'forest' unknown"),
    ({"threshold": 0.3}, r"not a P\(not lung\) in \[0.5, 1\)"),
    ({"threshold": 0.97}, "is not the one tissue_gate.npz was exported with"),
    ({"feature_layer": "nowhere"}, "'tissue_gate' cannot be used: .*nowhere"),
    ({"params_file": "missing.npz"}, "not found"),
])
def test_a_broken_block_stops_the_load_with_one_clear_line(copy_of, change, message):
    folder = copy_of()
    config = _config(folder)
    config["tissue_gate"] = {**config["tissue_gate"], **change}
    _write_config(folder, config)
    with pytest.raises(ModelFolderError, match=message) as err:
        Predictor(folder)
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_keras_and_openvino_agree_on_the_gate(copy_of):
    pytest.importorskip("openvino", reason="the openvino package is not installed: only Keras can serve here")
    from training.export.runtime_export import to_openvino   # deferred: imports openvino, skipped above
    import openvino as ov   # deferred: skipped above when absent

    folder = copy_of()
    model = keras.saving.load_model(folder / "model.keras", compile=False)
    xml, weights = (folder / name for name in RUNTIME_FILES)
    ov.save_model(to_openvino(keras.Model(model.inputs, [model.outputs[0], model.get_layer("features").output])),
                  str(xml), compress_to_fp16=False)
    config = _config(folder)
    config["runtime"] = RuntimeSpec(format="openvino", precision="float32", model_file=xml.name,
                                    sha256={p.name: file_sha256(p) for p in (xml, weights)}).to_dict()
    _write_config(folder, config)
    served, reference = Predictor(folder), Predictor(folder, runtime="keras")
    assert served.runtime.startswith("openvino") and served.engine.tissue_gate is served.tissue_gate
    fields = np.concatenate([_noise(10, 6, 0), _noise(11, 6, 1)])
    a, b = served.engine.run(fields), reference.engine.run(fields)
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-4)
    np.testing.assert_allclose(a.gate_scores, b.gate_scores, atol=1e-4)
    codes = served.classify_fields(list(fields)).codes()
    assert codes == reference.classify_fields(list(fields)).codes() == [None] * 6 + ["organ"] * 6
