"""Keras (TensorFlow) loads only where it is used (issue 28, item 4): at start when it serves, else on the
first Grad-CAM; the checks a start-up load made still hold, at start without Keras and again when it loads."""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from imageclf.model.explain import LazyGradCam
from imageclf.model.load_checks import ModelFolderError
from imageclf.model.predictor import Predictor
from tests.conftest import HUB_MODEL, ROOT
from tests.support.tiny_model import write_tiny_model_folder

NO_TENSORFLOW = "import sys\n{imports}\nassert not {{'tensorflow', 'keras'}} & set(sys.modules), 'TensorFlow loaded'\n"


def _linked_copy(dest):
    """hub_model/ as symlinks (no 60 MB copies), config.json and model.keras replaceable by a test."""
    dest.mkdir()
    for path in HUB_MODEL.iterdir():
        if path.name != "config.json":
            (dest / path.name).symlink_to(path.resolve())
    shutil.copy(HUB_MODEL / "config.json", dest / "config.json")
    return dest


@pytest.mark.parametrize("imports", [
    "import imageclf.slides.writers, imageclf.slides.cohort, imageclf.slides.dask_run, imageclf.model.explain",
    "import imageclf.core.rule, imageclf.model.config, imageclf.model.predictor, scripts.predict_client",
    "sys.path.insert(0, 'space')\nimport service, panels, slide_tab, slide_viewer",
])
def test_importing_the_serving_modules_loads_no_tensorflow(imports):
    _python(NO_TENSORFLOW.format(imports=imports))


@pytest.mark.slow   # loads the real model, then Keras (about 15 s)
def test_the_optimised_engine_serves_without_keras_until_grad_cam_asks():
    _python("import sys, numpy as np\nfrom imageclf.model.predictor import Predictor\n"
            "p = Predictor('hub_model')\nassert p.runtime.startswith('openvino') and not p.keras_loaded\n"
            "p.engine.run(np.zeros((1, 224, 224, 3), np.uint8))\nassert 'tensorflow' not in sys.modules\n"
            "assert p.model.output_shape == (None, 3) and p.keras_loaded and 'tensorflow' in sys.modules\n")


def test_an_unsafe_model_keras_stops_the_start_even_when_keras_does_not_serve(tmp_path):
    folder = _linked_copy(tmp_path / "m")
    (folder / "model.keras").unlink()
    _make_lambda_archive(write_tiny_model_folder(tmp_path / "tiny") / "model.keras", folder / "model.keras")
    with pytest.raises(ModelFolderError, match="is refused: it contains Lambda layer 'payload'"):
        Predictor(folder)


def test_a_model_keras_swapped_after_start_is_refused_when_keras_first_loads(tmp_path):
    folder = _linked_copy(tmp_path / "m")
    predictor = Predictor(folder)
    assert predictor.runtime.startswith("openvino") and not predictor.keras_loaded
    (folder / "model.keras").unlink()
    _make_lambda_archive(write_tiny_model_folder(tmp_path / "tiny") / "model.keras", folder / "model.keras")
    with pytest.raises(ModelFolderError, match="is refused: it contains Lambda layer"):
        predictor.model
    assert not predictor.keras_loaded


@pytest.mark.parametrize("change, message", [
    ({"input_size": [112, 112]}, r"Model input \(224, 224\) differs from config input_size \[112, 112\]"),
    ({"feature_ood": "nowhere"}, "'feature_ood' cannot be used: No such layer: nowhere"),
])
def test_the_archive_is_checked_at_start_without_keras(tmp_path, change, message):
    folder = _linked_copy(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    if "feature_ood" in change:
        config["feature_ood"]["feature_layer"] = change["feature_ood"]
        config.pop("tissue_gate", None)   # the gate must read the feature check's layer: it would say so first
    else:
        config.update(change)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match=message):
        Predictor(folder)


def test_grad_cam_is_built_once_on_first_use_and_a_failure_is_remembered(caplog):
    loads = []

    def load():
        loads.append(1)
        raise ModelFolderError("model.keras could not be loaded: damaged")

    cam = LazyGradCam(load)
    assert not loads                      # nothing at construction
    caplog.set_level(logging.WARNING)
    assert cam.get() is None and cam.get() is None
    assert loads == [1] and cam.error == "model.keras could not be loaded: damaged"
    assert [r.getMessage() for r in caplog.records] == ["Grad-CAM unavailable: model.keras could not be loaded: damaged"]


def test_grad_cam_on_a_keras_model_loaded_late(tiny_folder):
    predictor = Predictor(tiny_folder)   # Keras serves a folder without an optimised runtime: loaded at start
    cam = LazyGradCam(lambda: predictor.model).get()
    result = cam.heatmap(np.zeros((*predictor.input_size, 3), np.uint8))
    assert result.heatmap.ndim == 2 and 0 <= result.class_index < len(predictor.class_ids)


def _python(code: str) -> None:
    """Run ``code`` in a fresh interpreter at the project root (what a process imports is the point)."""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def _make_lambda_archive(source, dest) -> None:
    """``source`` (a .keras archive) with a Lambda layer named in its config, written to ``dest``."""
    with zipfile.ZipFile(source) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    config["config"]["layers"].append({"module": "keras.layers", "class_name": "Lambda", "registered_name": None,
                                       "config": {"name": "payload", "function": {"class_name": "__lambda__"}}})
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(dest, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
