"""Provenance: an export from uncommitted training code is refused unless allowed (and then recorded),
and ``run_metadata`` names the code, the packages and the model. Real git, in a temporary repository."""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import pytest

from imageclf import provenance
from imageclf.errors import ModelError
from imageclf.provenance import CHECKOUT, DIRTY, UNKNOWN, code_version, package_versions, run_metadata
from training.runtime.provenance import DirtyTreeError, checked_code_version

SHA = re.compile(r"[0-9a-f]{40}")


def _git(root: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.org", "-c", "commit.gpgsign=false", *args]
    return subprocess.run(command, cwd=root, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path) -> Path:
    """A committed checkout with training code, the shared package and docs."""
    root = tmp_path / "repo"
    for name, text in {"training/train.py": "EPOCHS = 16\n", "src/imageclf/rule.py": "LIMIT = 1\n",
                       "docs/training.md": "# Training\n"}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "start")
    return root


def test_a_committed_tree_exports_with_its_commit(repo):
    checked = checked_code_version(allow_dirty=False, root=repo)
    assert checked.code_version == _git(repo, "rev-parse", "HEAD") and SHA.fullmatch(checked.code_version)
    assert checked.dirty_tree_allowed is False


@pytest.mark.parametrize("changed", ["training/train.py", "src/imageclf/rule.py"])
def test_uncommitted_training_code_is_refused_unless_allowed(repo, changed):
    (repo / changed).write_text("changed = True\n")
    with pytest.raises(DirtyTreeError, match="commit or pass --allow-dirty") as refused:
        checked_code_version(allow_dirty=False, root=repo)
    assert isinstance(refused.value, ModelError) and changed.split("/")[0] + "/" in str(refused.value)

    checked = checked_code_version(allow_dirty=True, root=repo)
    assert checked.code_version == _git(repo, "rev-parse", "HEAD") + DIRTY
    assert checked.dirty_tree_allowed is True


def test_docs_and_untracked_files_do_not_make_the_training_code_dirty(repo):
    (repo / "docs" / "training.md").write_text("# Training, edited\n")
    (repo / "training" / "notes.txt").write_text("an output left in the tree\n")
    checked = checked_code_version(allow_dirty=False, root=repo)
    assert not checked.code_version.endswith(DIRTY) and checked.dirty_tree_allowed is False
    assert code_version(repo).endswith(DIRTY)   # the checkout as a whole is dirty: docs count there


def test_outside_a_checkout_the_version_is_unknown(repo, tmp_path):
    assert code_version(tmp_path / "elsewhere") == UNKNOWN
    assert code_version(repo / "src") == UNKNOWN   # a folder inside a repo is not a checkout of its own


def test_run_metadata_names_code_packages_and_model(tmp_path):
    model_file = tmp_path / "model" / "model.keras"
    model_file.parent.mkdir()
    model_file.write_bytes(b"weights")
    sha256 = hashlib.sha256(b"weights").hexdigest()

    local = run_metadata(model_name="tiny", model_file=model_file)
    assert local["code_version"] == code_version(CHECKOUT)
    assert {"python", "numpy"} <= set(local["packages"])
    assert local["model"] == {"name": "tiny", "repo": None, "revision": None,
                              "folder": str(model_file.parent.resolve()), "sha256": sha256}
    hub = run_metadata(model_name="tiny", model_file=model_file, model_repo="a/b", model_revision="0" * 40)
    assert hub["model"] == {"name": "tiny", "repo": "a/b", "revision": "0" * 40, "folder": None, "sha256": sha256}
    assert json.loads(json.dumps(hub)) == hub


def test_package_versions_leave_out_what_is_not_installed(monkeypatch):
    monkeypatch.setattr(provenance, "PACKAGES", ("numpy", "no-such-distribution"))
    assert set(package_versions()) == {"python", "numpy"}
