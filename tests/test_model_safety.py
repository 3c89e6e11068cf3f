"""Nothing in a model file runs at load, and no Hub token is ever printed or logged.

Model files: ``src/imageclf/model/safety.py`` refuses Lambda layers and custom classes before Keras
reads the file, and Keras ``safe_mode=True`` stays on behind it. Tokens: the push / deploy
scripts (as processes, with the Hub client's debug logging on) and the Space's model download.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import pytest

from imageclf.model import predictor as predictor_module
from imageclf.model.safety import unsafe_parts
from imageclf.settings import Settings
from imageclf.hub.source import ModelSourceError, resolve_model_source
from imageclf.model.predictor import ModelFolderError, Predictor
from tests.conftest import HUB_MODEL, ROOT
from tests.test_hub_scripts import make_model_folder, make_space_folder
from tests.support.tiny_model import write_tiny_model_folder

TOKEN = "hf_FAKEtoken1234567890abcdef"


def _save_lambda_model(folder: Path, marker: Path) -> None:
    """Same contract as the tiny model, plus a Lambda whose code writes ``marker`` if it ever runs."""
    inputs = keras.Input(shape=(64, 64, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    # The path is a constant in the code object (Keras cannot round-trip default arguments).
    payload = eval(f"lambda t: (open({str(marker)!r}, 'w').write('ran'), t)[1]")  # noqa: S307
    x = keras.layers.Lambda(payload, name="payload")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    keras.Model(inputs, outputs).save(folder / "model.keras")


@pytest.fixture
def lambda_folder(tmp_path) -> tuple[Path, Path]:
    folder = write_tiny_model_folder(tmp_path / "m")
    marker = tmp_path / "lambda-ran.txt"
    _save_lambda_model(folder, marker)
    marker.unlink(missing_ok=True)  # building the model ran it once; only loading counts
    return folder, marker


def test_lambda_layer_is_refused_before_keras_reads_it(lambda_folder):
    folder, marker = lambda_folder
    with pytest.raises(ModelFolderError) as info:
        Predictor(folder)
    message = str(info.value)
    assert "is refused: it contains Lambda layer 'payload'" in message and "arbitrary code" in message
    assert not marker.exists()
    # The control: an unsafe load does run the payload, so the check above means something.
    keras.saving.load_model(folder / "model.keras", compile=False, safe_mode=False)
    assert marker.read_text() == "ran"


def test_keras_safe_mode_is_the_second_line_of_defence(lambda_folder, monkeypatch):
    folder, marker = lambda_folder
    monkeypatch.setattr(predictor_module, "unsafe_parts", lambda path: [])  # first line switched off
    with pytest.raises(ModelFolderError, match="could not be loaded: Requested the deserialization of a `Lambda`"):
        Predictor(folder)
    assert not marker.exists()


def test_custom_class_is_refused(tmp_path):
    @keras.saving.register_keras_serializable(package="Outside")
    class Scale(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    folder = write_tiny_model_folder(tmp_path / "m")
    inputs = keras.Input(shape=(64, 64, 3), dtype="uint8")
    x = keras.layers.GlobalAveragePooling2D()(Scale()(keras.layers.Rescaling(1.0 / 255)(inputs)))
    keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x)).save(folder / "model.keras")
    assert any("custom class 'Outside>Scale'" in part for part in unsafe_parts(folder / "model.keras"))
    with pytest.raises(ModelFolderError, match="custom class 'Outside>Scale'"):
        Predictor(folder)


def test_damaged_model_file_is_one_clear_line(tmp_path):
    folder = write_tiny_model_folder(tmp_path / "m")
    data = (folder / "model.keras").read_bytes()
    (folder / "model.keras").write_bytes(data[: len(data) // 2])  # an interrupted copy
    with pytest.raises(ModelFolderError, match="is not a readable .keras archive") as info:
        Predictor(folder)
    assert "\n" not in str(info.value)


def test_bundled_model_holds_builtin_keras_objects_only():
    with zipfile.ZipFile(HUB_MODEL / "model.keras") as archive:
        config = json.loads(archive.read("config.json"))
    objects = []

    def walk(node):
        if isinstance(node, dict):
            if "class_name" in node:
                objects.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    assert len(objects) > 50  # the walk does see the layers
    for obj in objects:
        module, name, registered = obj.get("module"), obj["class_name"], obj.get("registered_name")
        assert name not in ("Lambda", "__lambda__", "TFSMLayer"), obj
        if module is None:
            assert name == "__keras_tensor__", obj
        else:
            assert module == "keras" or module.startswith("keras."), obj
            assert registered in (None, name), obj
    assert unsafe_parts(HUB_MODEL / "model.keras") == []


def _run_cli(module: str, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=180)


def test_token_never_printed_by_the_scripts_even_with_hub_debug_logging(local_hub, tmp_path):
    local_hub.tokens[TOKEN] = "testuser"
    env = {**os.environ, **local_hub.env, "HF_TOKEN": TOKEN, "HF_DEBUG": "1", "PYTHONPATH": str(ROOT)}
    model, space = make_model_folder(tmp_path / "m"), make_space_folder(tmp_path / "s")
    pushed = _run_cli("scripts.release.push_model", ["--repo-id", "testuser/leak-check", "--folder", str(model)], env)
    assert pushed.returncode == 0, pushed.stderr[-2000:]
    sha = pushed.stdout.strip()
    deployed = _run_cli("scripts.release.deploy_space", ["--space-id", "testuser/leak-demo", "--model-repo",
                                                 "testuser/leak-check", "--model-revision", sha,
                                                 "--space-dir", str(space)], env)
    assert deployed.returncode == 0, deployed.stderr[-2000:]
    del local_hub.tokens[TOKEN]  # now the Hub rejects the same token
    refused = _run_cli("scripts.release.push_model", ["--repo-id", "testuser/leak-check", "--folder", str(model)], env)
    assert refused.returncode == 1 and "rejected the token" in refused.stderr
    output = "".join(p.stdout + p.stderr for p in (pushed, deployed, refused))
    assert "curl -X POST" in output and "<TOKEN>" in output  # debug logging was on: requests were logged
    assert TOKEN not in output


def test_token_never_in_model_download_errors_or_logs(local_hub, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # not known to the Hub: every request is refused
    with pytest.raises(ModelSourceError) as info:
        resolve_model_source(Settings.from_env({"MODEL_REPO": "testuser/private-model", "MODEL_REVISION": "main"}))
    assert "testuser/private-model" in str(info.value) and "rejected the token" in str(info.value)
    assert caplog.records and TOKEN not in caplog.text + str(info.value)
