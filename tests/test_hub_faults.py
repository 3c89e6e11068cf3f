"""Hub faults at Space start-up, against the local Hub (``tests/support/hub_server.py``).

Complements ``tests/test_model_source.py`` (happy paths, pinned sha from the cache, unknown
branch): Hub down with and without a cache (in-process and as a real ``space/app.py``
process), unknown commit, a file missing from the repo, and short or corrupted downloads.
"""
from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from huggingface_hub import HfApi

from imageclf.settings import Settings
from imageclf.hub.source import ModelSourceError, resolve_model_source
from scripts.perf.local_space import APP, SpaceProcess
from scripts.perf.traffic import classify
from scripts.predict_client import connect
from tests.support.tiny_model import write_test_image, write_tiny_model_folder

REPO = "testuser/fault-model"
MODEL_BYTES = b"PK\x03\x04" + bytes(range(256)) * 8  # LFS (*.keras), 2 KiB


def _push(folder: Path) -> str:
    api = HfApi()
    api.create_repo(REPO, exist_ok=True)
    return api.upload_folder(repo_id=REPO, folder_path=folder, commit_message="model").oid


def _fake_folder(path: Path, *, without: tuple[str, ...] = ()) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name in ("model.keras", "labels.json", "config.json", "metrics.json", "README.md"):
        if name not in without:
            (path / name).write_bytes(MODEL_BYTES if name == "model.keras" else b"{}")
    return path


def _model_source_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "imageclf.hub.source" and r.levelno >= logging.WARNING]


def test_hub_down_branch_is_served_from_the_cache_with_one_warning(local_hub, tmp_path, caplog):
    sha = _push(_fake_folder(tmp_path / "m"))
    env = {"MODEL_REPO": REPO, "MODEL_REVISION": "main"}
    online = resolve_model_source(Settings.from_env(env))
    local_hub.stop()
    caplog.set_level(logging.INFO)
    start = time.monotonic()
    offline = resolve_model_source(Settings.from_env(env))
    assert time.monotonic() - start < 15  # three tries, 1 s and 2 s apart, then the cache
    assert offline == online and offline.commit == sha
    warnings = _model_source_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "Cannot reach the Hub" in warnings[0] and f"Hub repo {REPO} at revision main" in warnings[0]
    assert local_hub.endpoint in warnings[0] and sha in warnings[0] and "out of date" in warnings[0]


def test_hub_down_and_nothing_cached_is_one_clear_error(local_hub):
    local_hub.stop()
    with pytest.raises(ModelSourceError) as info:
        resolve_model_source(Settings.from_env({"MODEL_REPO": REPO, "MODEL_REVISION": "main"}))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"Cannot reach the Hub to get Hub repo {REPO} at revision main "
                              f"(endpoint {local_hub.endpoint})")
    assert "no intact copy is cached" in message


def test_space_process_exits_fast_with_one_line_when_hub_down_and_nothing_cached(local_hub):
    sha = "0123456789abcdef0123456789abcdef01234567"
    local_hub.stop()
    env = {**os.environ, **local_hub.env, "MODEL_REPO": REPO, "MODEL_REVISION": sha,
           "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("MODEL_DIR", None)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, str(APP)], cwd=APP.parent, env=env, capture_output=True,
                          text=True, timeout=180)
    assert time.monotonic() - start < 120  # bounded: no endless retrying
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert f"Cannot reach the Hub to get Hub repo {REPO} at revision {sha} (endpoint {local_hub.endpoint})" in last


def test_space_process_starts_from_the_cache_when_hub_is_down(local_hub, tmp_path):
    folder = write_tiny_model_folder(tmp_path / "tiny")
    sha = _push(folder)
    env = {"MODEL_REPO": REPO, "MODEL_REVISION": "main"}
    resolve_model_source(Settings.from_env(env))  # fills the cache in local_hub.hf_home, as an earlier start would
    local_hub.stop()
    with SpaceProcess(env={**local_hub.env, **env}) as space:
        classify(connect(space.url), write_test_image(tmp_path / "tile.png"))
        log = space.output()
    warnings = [line for line in log.splitlines() if "Cannot reach the Hub" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0] and sha in warnings[0], log[-3000:]


def test_commit_that_does_not_exist(local_hub, tmp_path):
    _push(_fake_folder(tmp_path / "m"))
    with pytest.raises(ModelSourceError, match=f"revision {'f' * 40} .*: that revision does not exist"):
        resolve_model_source(Settings.from_env({"MODEL_REPO": REPO, "MODEL_REVISION": "f" * 40}))


def test_required_file_missing_from_the_repo(local_hub, tmp_path):
    sha = _push(_fake_folder(tmp_path / "m", without=("labels.json",)))
    with pytest.raises(ModelSourceError) as info:
        resolve_model_source(Settings.from_env({"MODEL_REPO": REPO, "MODEL_REVISION": sha}))
    assert f"Hub repo {REPO} at revision {sha} (endpoint {local_hub.endpoint}) has no labels.json" in str(info.value)


def test_short_download_is_refused_then_recovers(local_hub, tmp_path):
    sha = _push(_fake_folder(tmp_path / "m"))
    oid = hashlib.sha256(MODEL_BYTES).hexdigest()
    local_hub.cdn_overrides[oid] = MODEL_BYTES[:1000]  # the CDN cuts the body short, twice
    env = {"MODEL_REPO": REPO, "MODEL_REVISION": sha}
    with pytest.raises(ModelSourceError) as info:
        resolve_model_source(Settings.from_env(env))
    message = str(info.value)
    assert f"Could not download an intact model.keras from Hub repo {REPO} at revision {sha}" in message
    assert f"should be of size {len(MODEL_BYTES)} but has size 1000" in message and "\n" not in message
    del local_hub.cdn_overrides[oid]
    assert resolve_model_source(Settings.from_env(env)).path("model.keras").read_bytes() == MODEL_BYTES


def test_corrupted_download_of_the_right_size_is_caught_by_its_checksum(local_hub, tmp_path):
    sha = _push(_fake_folder(tmp_path / "m"))
    oid = hashlib.sha256(MODEL_BYTES).hexdigest()
    local_hub.cdn_overrides[oid] = bytes(reversed(MODEL_BYTES))  # same size: the client's size check passes
    env = {"MODEL_REPO": REPO, "MODEL_REVISION": sha}
    with pytest.raises(ModelSourceError, match=f"checksum .* does not match the Hub's {oid[:12]}"):
        resolve_model_source(Settings.from_env(env))
    assert not list(local_hub.hf_home.rglob(oid))  # the bad copy is not left for the next start
    del local_hub.cdn_overrides[oid]
    assert resolve_model_source(Settings.from_env(env)).path("model.keras").read_bytes() == MODEL_BYTES


def test_damaged_cached_file_is_downloaded_again(local_hub, tmp_path, caplog):
    sha = _push(_fake_folder(tmp_path / "m"))
    env = {"MODEL_REPO": REPO, "MODEL_REVISION": sha}
    blob = resolve_model_source(Settings.from_env(env)).path("model.keras").resolve()
    blob.write_bytes(b"bit rot" + MODEL_BYTES[7:])
    caplog.set_level(logging.WARNING)
    assert resolve_model_source(Settings.from_env(env)).path("model.keras").read_bytes() == MODEL_BYTES
    assert any("damaged" in message for message in _model_source_warnings(caplog))


def test_runtime_files_travel_with_the_model_and_a_bad_copy_is_left_out(local_hub, tmp_path, caplog):
    """The optimised runtime's files (``model_openvino.xml`` + ``.bin``) are downloaded with the
    model; a corrupted copy of one is not served (it is optional: the Predictor then serves
    Keras, ``tests/test_runtime_engine.py``), and the model still starts."""
    folder = _fake_folder(tmp_path / "m")
    runtime = {"model_openvino.xml": b"<?xml version='1.0'?><net/>", "model_openvino.bin": bytes(range(256)) * 4}
    for name, data in runtime.items():
        (folder / name).write_bytes(data)
    sha = _push(folder)
    env = {"MODEL_REPO": REPO, "MODEL_REVISION": sha}
    source = resolve_model_source(Settings.from_env(env))
    assert {name: source.path(name).read_bytes() for name in runtime} == runtime

    oid = hashlib.sha256(runtime["model_openvino.bin"]).hexdigest()
    local_hub.cdn_overrides[oid] = bytes(reversed(runtime["model_openvino.bin"]))  # same size, other bytes
    caplog.set_level(logging.INFO)
    damaged = resolve_model_source(Settings.from_env(env), cache_dir=tmp_path / "other-cache")  # nothing cached
    assert damaged.path("model_openvino.bin") is None and damaged.path("model_openvino.xml") is not None
    assert damaged.path("model.keras").read_bytes() == MODEL_BYTES
    assert any("Optional model_openvino.bin not used" in r.getMessage() for r in caplog.records)
