"""The whole pipeline on the real model: hub_model/ -> push -> pinned download -> Space -> gradio_client.

The prediction that comes back through the Space must equal plain Keras on the local file.
"""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from gradio_client import Client, handle_file

from imageclf.core.imaging import load_model_input
from scripts.release.push_model import push_model

from .conftest import HUB_MODEL
from .tiny_model import run_space


def test_pushed_model_served_by_the_space_predicts_like_plain_keras(local_hub, lung_data):
    tile = lung_data / "lung_scc" / "lungscc1.jpeg"
    sha = push_model(HUB_MODEL, repo_id="testuser/lung-histopathology-cnn", endpoint=local_hub.endpoint)
    assert len(sha) == 40

    env = {**local_hub.env, "MODEL_REPO": "testuser/lung-histopathology-cnn", "MODEL_REVISION": sha}
    with run_space(None, env=env) as url:
        client = Client(url, verbose=False, download_files=False)
        answer, result = client.predict(handle_file(str(tile)), api_name="/predict")
        info = client.view_api(print_info=False, return_format="dict")
    assert "/predict" in info["named_endpoints"]

    config = json.loads((HUB_MODEL / "config.json").read_text())
    labels = json.loads((HUB_MODEL / "labels.json").read_text())
    model = keras.saving.load_model(HUB_MODEL / "model.keras", compile=False, safe_mode=True)
    expected = model.predict(load_model_input(tile, size=tuple(config["input_size"]))[None], verbose=0)[0]
    expected_by_name = {labels[str(i)]["name"]: float(p) for i, p in enumerate(expected)}

    served = {c["label"]: c["confidence"] for c in answer["confidences"]}
    assert served == pytest.approx(expected_by_name, abs=1e-5)
    assert answer["label"] == labels[str(int(np.argmax(expected)))]["name"]
    assert result["label"] == labels[str(int(np.argmax(expected)))]["id"]
    assert result["model_repo"] == "testuser/lung-histopathology-cnn" and result["model_revision"] == sha
