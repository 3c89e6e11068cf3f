"""``src/imageclf/hub/source.py``: local folders, and the Hub path against the local Hub server."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from huggingface_hub import HfApi

from imageclf.settings import Settings
from imageclf.hub.source import DEFAULT_MODEL_DIR, ModelSourceError, local_model, resolve_model_source

REPO = "testuser/tiny-classifier"
REQUIRED = ("model.keras", "labels.json", "config.json")


def _fake_model_folder(path: Path, *, optional: bool = True) -> Path:
    """File names of the contract; contents do not matter for resolving the folder."""
    path.mkdir(parents=True, exist_ok=True)
    for name in REQUIRED + (("metrics.json", "README.md") if optional else ()):
        (path / name).write_bytes(b"model-bytes" if name == "model.keras" else b"{}")
    return path


def _push(folder: Path) -> str:
    api = HfApi()
    api.create_repo(REPO, exist_ok=True)
    return api.upload_folder(repo_id=REPO, folder_path=folder, commit_message="model").oid


def test_default_is_hub_model_beside_space():
    assert DEFAULT_MODEL_DIR == Path(__file__).resolve().parents[1] / "hub_model"


def test_model_dir(tmp_path):
    folder = _fake_model_folder(tmp_path / "m")
    source = resolve_model_source(Settings.from_env({"MODEL_DIR": str(folder)}))
    assert source.folder == folder.resolve() and source.is_local
    assert source.repo_id is None and source.revision is None
    assert source.description == f"local folder {folder.resolve()}"
    assert source.path("metrics.json") == folder.resolve() / "metrics.json"


def test_default_dir_when_nothing_set(tmp_path):
    folder = _fake_model_folder(tmp_path / "hub_model", optional=False)
    source = resolve_model_source(Settings.from_env({}), default_dir=folder)
    assert source.folder == folder.resolve()
    assert source.path("README.md") is None and sorted(source.files) == sorted(REQUIRED)


@pytest.mark.parametrize("env, message", [
    ({"MODEL_REPO": "a/b", "MODEL_DIR": "/tmp"}, "set only one"),
    ({"MODEL_REVISION": "main"}, "MODEL_REPO is not"),
    ({"MODEL_DIR": "/nonexistent/model"}, "Model folder not found: /nonexistent/model"),
])
def test_bad_settings(env, message):
    with pytest.raises(ModelSourceError, match=message):
        resolve_model_source(Settings.from_env(env))


def test_local_folder_missing_files(tmp_path):
    folder = _fake_model_folder(tmp_path / "m")
    (folder / "labels.json").unlink()
    with pytest.raises(ModelSourceError, match="lacks labels.json"):
        local_model(folder)


def test_hub_pinned_commit_then_served_from_cache_when_hub_is_down(local_hub, tmp_path):
    sha = _push(_fake_model_folder(tmp_path / "m"))
    env = {"MODEL_REPO": REPO, "MODEL_REVISION": sha}
    source = resolve_model_source(Settings.from_env(env))
    assert (source.repo_id, source.revision, source.commit) == (REPO, sha, sha)
    assert sorted(source.files) == sorted(REQUIRED + ("metrics.json", "README.md"))
    assert all(path.parent == source.folder for path in source.files.values())
    assert (source.folder / "model.keras").read_bytes() == b"model-bytes"
    assert source.description == f"Hub repo {REPO} @ {sha[:12]}"
    local_hub.stop()  # a restart with the pinned sha must not need the Hub
    assert resolve_model_source(Settings.from_env(env)) == source


def test_hub_branch_resolves_to_its_commit_and_skips_missing_optional_files(local_hub, tmp_path):
    sha = _push(_fake_model_folder(tmp_path / "m", optional=False))
    source = resolve_model_source(Settings.from_env({"MODEL_REPO": REPO, "MODEL_REVISION": "main"}))
    assert source.revision == "main" and source.commit == sha
    assert sorted(source.files) == sorted(REQUIRED)


def test_hub_errors_name_repo_revision_and_endpoint(local_hub, tmp_path):
    _push(_fake_model_folder(tmp_path / "m"))
    with pytest.raises(ModelSourceError) as info:
        resolve_model_source(Settings.from_env({"MODEL_REPO": REPO, "MODEL_REVISION": "no-such-branch"}))
    message = str(info.value)
    assert "\n" not in message
    assert re.search(rf"Hub repo {REPO} at revision no-such-branch "
                     rf"\(endpoint {re.escape(local_hub.endpoint)}\): that revision does not exist", message)
    with pytest.raises(ModelSourceError, match="Hub repo testuser/missing at revision main"):
        resolve_model_source(Settings.from_env({"MODEL_REPO": "testuser/missing"}))
