"""The whole pipeline on the real model: hub_model/ -> push -> pinned download -> Space -> gradio_client.

The prediction that comes back through the Space must equal plain Keras on the local file; and the
deployed Space bundle (``space/`` plus its copy of the shared package) runs from its own files.
"""
from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from gradio_client import Client, handle_file

from huggingface_hub import snapshot_download

from imageclf.core.imaging import load_model_input
from scripts.perf.local_space import SpaceProcess
from scripts.release.deploy_space import deploy_space
from scripts.release.push_model import push_model

from .conftest import HUB_MODEL
from tests.support.tiny_model import run_space


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


def test_deployed_space_bundle_runs_from_its_own_files(local_hub, lung_data, tmp_path):
    """deploy_space uploads space/ plus src/imageclf; a copy downloaded from the Hub starts and answers."""
    tile = lung_data / "lung_scc" / "lungscc1.jpeg"
    repo, space_id = "testuser/lung-bundle-model", "testuser/lung-bundle-space"
    sha = push_model(HUB_MODEL, repo_id=repo, endpoint=local_hub.endpoint)
    space_sha = deploy_space(space_id=space_id, model_repo=repo, model_revision=sha, endpoint=local_hub.endpoint)
    bundle = Path(snapshot_download(space_id, repo_type="space", revision=space_sha, local_dir=tmp_path / "bundle",
                                    endpoint=local_hub.endpoint))
    assert (bundle / "app.py").is_file() and (bundle / "imageclf" / "core" / "rule.py").is_file()
    env = {**local_hub.env, "MODEL_REPO": repo, "MODEL_REVISION": sha}
    with SpaceProcess(env=env, app=bundle / "app.py", timeout=180) as space:
        label, result = Client(space.url, verbose=False).predict(handle_file(str(tile)), api_name="/predict")
        log = space.output()
    assert f"code: {bundle.resolve() / 'imageclf'}" in log, log[-2000:]   # the bundle's copy, not src/
    assert result["model_revision"] == sha and result["label"] in {"lung_aca", "lung_n", "lung_scc"}
    assert result["abstain_code"] is None or result["abstained"]
