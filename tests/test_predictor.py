"""``src/imageclf/model/predictor.py``: the model contract, on a tiny deterministic model."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from imageclf.core.refusal import Reason, judge_field
from imageclf.core.imaging import ImageError, decode_image, to_model_input
from imageclf.model.predictor import ModelFolderError, Predictor
from tests.support.tiny_model import DEFAULT_LABELS, write_test_image, write_tiny_model_folder
from tests.support.field_rows import field_rows, one_field


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return write_tiny_model_folder(tmp_path_factory.mktemp("tiny") / "hub_model", input_size=(32, 48))


@pytest.fixture(scope="module")
def predictor(tiny_folder) -> Predictor:
    return Predictor(tiny_folder)


@pytest.fixture(scope="module")
def image_file(tmp_path_factory) -> Path:
    return write_test_image(tmp_path_factory.mktemp("img") / "tile.png", size=(60, 90), seed=3)


def test_labels_and_config_come_from_the_files(predictor):
    assert predictor.class_ids == [cid for cid, _ in DEFAULT_LABELS]
    assert predictor.names == [name for _, name in DEFAULT_LABELS]
    assert predictor.input_size == (32, 48)
    assert predictor.model_name == "tiny-test-model"
    assert predictor.disclaimer == "Test model. Not a diagnostic device."
    assert predictor.metrics["accuracy"] == 0.5
    assert predictor.spec.refusal.abstain.method == "none"  # no "abstain" in config.json: never abstain


def test_predict_uint8_array_follows_the_contract(predictor):
    rgb = np.random.default_rng(1).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    result = one_field(predictor, rgb)
    probs = result["probabilities"]
    assert list(probs) == predictor.class_ids
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert all(0.0 <= p <= 1.0 for p in probs.values())
    top = max(probs, key=probs.get)
    assert result["label"] == top
    assert result["name"] == predictor.names[predictor.class_ids.index(top)]
    assert result["confidence"] == probs[top]
    # gr.Label's shape: same numbers keyed by human name
    assert result["confidences"] == {predictor.names[i]: probs[cid]
                                     for i, cid in enumerate(predictor.class_ids)}
    assert result["abstained"] is False and result["abstain_reason"] is None
    assert one_field(predictor, rgb) == result  # deterministic


def test_result_equals_the_raw_model_output(predictor, image_file):
    x = to_model_input(decode_image(image_file), size=predictor.input_size)
    assert x.dtype == np.uint8 and x.shape == (32, 48, 3)
    raw = np.asarray(predictor.model(x[None], training=False))[0]
    got = one_field(predictor, image_file)["probabilities"]
    np.testing.assert_allclose(list(got.values()), raw, rtol=1e-5, atol=1e-6)


def test_path_bytes_and_array_give_the_same_answer(predictor, image_file):
    from_path = one_field(predictor, image_file)
    assert one_field(predictor, str(image_file)) == from_path
    assert one_field(predictor, image_file.read_bytes()) == from_path
    assert one_field(predictor, decode_image(image_file)) == from_path


def test_other_dtypes_and_channel_counts_are_coerced(predictor):
    rgb = np.random.default_rng(2).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    as_uint8 = one_field(predictor, rgb)["probabilities"]
    as_float = one_field(predictor, rgb.astype(np.float32) / 255.0)["probabilities"]
    assert list(as_float.values()) == pytest.approx(list(as_uint8.values()), abs=1e-4)
    rgba = np.dstack([rgb, np.full((32, 48), 255, np.uint8)])
    assert one_field(predictor, rgba)["probabilities"] == as_uint8
    gray = one_field(predictor, rgb[..., 0])
    assert sum(gray["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_different_images_get_different_probabilities(predictor):
    red = np.zeros((32, 48, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((32, 48, 3), np.uint8)
    blue[..., 2] = 255
    assert one_field(predictor, red)["probabilities"] != one_field(predictor, blue)["probabilities"]


def test_predict_batch_matches_single_predictions(predictor, image_file):
    arrays = [np.full((20, 20, 3), v, np.uint8) for v in (0, 90, 200)]
    batch = field_rows(predictor, [*arrays, image_file])
    singles = [one_field(predictor, a) for a in [*arrays, image_file]]
    for got, want in zip(batch, singles, strict=True):
        assert got["label"] == want["label"]
        want_probs = list(want["probabilities"].values())
        assert list(got["probabilities"].values()) == pytest.approx(want_probs, abs=1e-6)
    assert field_rows(predictor, []) == []
    whole = predictor.classify_fields([*arrays, image_file])
    chunked = predictor.classify_fields([*arrays, image_file], batch=3)      # two model calls, same answers
    assert chunked.probabilities == pytest.approx(whole.probabilities, abs=1e-6)
    assert chunked.codes() == whole.codes() == [r["abstain_code"] for r in batch]
    with pytest.raises(ValueError, match="batch"):
        predictor.classify_fields(arrays, batch=0)


@pytest.mark.parametrize("bad, message", [
    (b"", "empty"),
    (b"definitely not an image", "not an image"),
    ("/nonexistent/tile.png", "File not found"),
    (np.zeros((4, 4, 5), np.uint8), "Expected an image array"),
    (12345, "Expected an image path"),
])
def test_bad_input_raises_image_error(predictor, bad, message):
    with pytest.raises(ImageError, match=message):
        one_field(predictor, bad)


def test_names_come_from_labels_json(tmp_path):
    folder = write_tiny_model_folder(tmp_path / "two", labels=[("x1", "First kind"), ("x2", "Second kind")])
    result = one_field(Predictor(folder), np.zeros((64, 64, 3), np.uint8))
    assert set(result["probabilities"]) == {"x1", "x2"}
    assert set(result["confidences"]) == {"First kind", "Second kind"}


# A hand-made colour check: any colour is "stain", but at least half the pixels must be tissue.
TISSUE_ONLY = {"palette": ["1111"] * 6, "bounds": {"tissue_fraction": [0.5, None]}}


def test_confidence_floor_abstains_with_a_plain_reason(tmp_path):
    rule = {"method": "softmax", "min_confidence": 0.999, "version": 1}
    predictor = Predictor(write_tiny_model_folder(tmp_path / "abstain", config_extra={"abstain": rule}))
    assert predictor.spec.refusal.abstain.min_confidence == 0.999
    result = one_field(predictor, np.full((64, 64, 3), 128, np.uint8))
    assert result["confidence"] < 0.999
    assert result["abstained"] is True and result["abstain_code"] == Reason.CONFIDENCE.value
    assert result["abstain_reason"] == Reason.CONFIDENCE.sentence()
    assert result["label"] in predictor.class_ids  # the probabilities are still reported


def test_colour_check_runs_on_the_resized_model_input(tmp_path):
    rule = {"method": "colour", "colour": TISSUE_ONLY}
    predictor = Predictor(write_tiny_model_folder(tmp_path / "colour", input_size=(32, 48),
                                                  config_extra={"abstain": rule}))
    white = np.full((300, 200, 3), 255, np.uint8)
    result = one_field(predictor, white)
    assert result["abstained"] is True and result["abstain_code"] == Reason.COLOUR.value
    assert result["abstain_reason"] == Reason.COLOUR.sentence()
    textured = np.random.default_rng(0).integers(0, 180, (300, 200, 3), dtype=np.uint8)
    assert one_field(predictor, textured)["abstained"] is False
    # Mostly white vs mostly tissue: the same answer as the refusal rule on the model input itself.
    for white_columns, expected in ((120, True), (80, False)):
        mixed = textured.copy()
        mixed[:, :white_columns] = 255
        decided = judge_field(predictor.prepare(mixed), np.array([1.0, 0, 0]), None, predictor.spec.refusal) is not None
        assert one_field(predictor, mixed)["abstained"] is decided is expected
    batch = field_rows(predictor, [white, textured])
    assert [r["abstained"] for r in batch] == [True, False]


def test_disabled_rule_never_abstains(tmp_path):
    folder = write_tiny_model_folder(tmp_path / "none", config_extra={"abstain": {"method": "none"}})
    assert one_field(Predictor(folder), np.full((64, 64, 3), 255, np.uint8))["abstained"] is False


def test_unknown_config_keys_are_refused_by_name(tmp_path):
    # A field this code does not know may be a rule it would silently skip: refuse, say which.
    folder = write_tiny_model_folder(tmp_path / "extra", config_extra={"future_key": {"a": 1}})
    with pytest.raises(ModelFolderError, match="future_key"):
        Predictor(folder)


def test_newer_schema_version_is_refused(tmp_path):
    folder = write_tiny_model_folder(tmp_path / "newer", config_extra={"schema_version": 99})
    with pytest.raises(ModelFolderError, match="schema_version 99.*Update the Space"):
        Predictor(folder)


@pytest.mark.parametrize("rule, message", [
    ("later", "must be an object"),
    ({"method": "magic"}, "Unknown abstain method"),
    ({"method": "softmax"}, "needs min_confidence"),
    ({"method": "colour"}, "needs a fitted colour check"),
    ({"method": "none", "version": 99}, "newer than this code"),
    ({"method": "colour", "colour": {"palette": ["12"], "bounds": {}}}, "palette"),
    ({"method": "colour", "colour": {"palette": ["1"], "bounds": {"hue": [0, 1]}}}, "bounds"),
])
def test_broken_abstain_rule_fails_at_load(tmp_path, rule, message):
    # Serving without a safety check the config asks for would be worse than not starting.
    folder = write_tiny_model_folder(tmp_path / "bad", config_extra={"abstain": rule})
    with pytest.raises(ModelFolderError, match=message):
        Predictor(folder)


def _write_labels(folder: Path, labels: dict) -> None:
    (folder / "labels.json").write_text(json.dumps(labels))


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("edit, message", [
    (lambda f: _edit_json(f / "config.json", labels=["gamma", "beta", "alpha"]), "disagree"),
    (lambda f: _edit_json(f / "config.json", input_size=[32, 32]), "differs from config input_size"),
    (lambda f: _edit_json(f / "config.json", input_size="big"), "input_size"),
    (lambda f: _edit_json(f / "config.json", channel_order="BGR"), "RGB only"),
    (lambda f: _write_labels(f, {"0": {"id": "a"}, "1": {"id": "b"}}), "disagree"),
    (lambda f: _write_labels(f, {"0": {"id": "a"}, "2": {"id": "b"}}), "0..n-1"),
    (lambda f: (f / "labels.json").write_text("{not json"), "not valid JSON"),
    (lambda f: (f / "model.keras").unlink(), "not found"),
])
def test_broken_model_folder_fails_at_load(tmp_path, edit, message):
    folder = write_tiny_model_folder(tmp_path / "broken")
    edit(folder)
    with pytest.raises(ModelFolderError, match=message):
        Predictor(folder)


def test_class_count_mismatch_fails_at_load(tmp_path):
    folder = write_tiny_model_folder(tmp_path / "count")
    (folder / "labels.json").write_text(json.dumps({"0": {"id": "a"}, "1": {"id": "b"}}))
    _edit_json(folder / "config.json", labels=["a", "b"])
    with pytest.raises(ModelFolderError, match="outputs shape"):
        Predictor(folder)


def test_jpeg_file_decodes_like_training(predictor, tmp_path):
    # The Space and training share imaging.decode_image, so a JPEG gives the same pixels both ways.
    rgb = np.random.default_rng(4).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    path = tmp_path / "tile.jpeg"
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert one_field(predictor, path) == one_field(predictor, decode_image(path))
