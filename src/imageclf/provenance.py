"""What produced an output: the code's git commit, the package versions and the model's identity.

``code_version`` is the one reading of git (training's ``training.runtime.provenance`` narrows it to
the training code and refuses uncommitted changes); ``run_metadata`` is the JSON-ready block that
outputs such as a slide run's ``summary.json`` carry, so a result can be traced to what made it.

Example:
    >>> code_version()
    '5fe7331c...+dirty'      # '+dirty': the checkout has uncommitted changes; 'unknown' outside git
    >>> run_metadata(model_name="lung-densenet121", model_file=Path("hub_model/model.keras"))["model"]
    {'name': 'lung-densenet121', 'repo': None, 'revision': None, 'folder': '/.../hub_model', 'sha256': '5c7b...'}
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from imageclf.hashing import file_sha256

__all__ = ["CHECKOUT", "DIRTY", "PACKAGES", "UNKNOWN", "code_version", "package_versions", "run_metadata"]

CHECKOUT = Path(__file__).resolve().parents[2]   # src/imageclf/ -> the repository (when run from one)
DIRTY = "+dirty"
UNKNOWN = "unknown"
# Distributions whose versions change answers or speed; tensorflow-cpu and tensorflow are
# alternatives, so either may be missing, and so may the optional ones: missing ones are left out.
PACKAGES = ("numpy", "keras", "tensorflow-cpu", "tensorflow", "openvino", "openslide-python", "gradio")


def code_version(root: str | os.PathLike = CHECKOUT, *, paths: Sequence[str] = ()) -> str:
    """The commit checked out at ``root``, with ``+dirty`` when tracked files under ``paths`` (all
    when empty) have uncommitted changes; ``"unknown"`` when ``root`` is not a git checkout.

    Untracked files do not count: outputs and caches land in the tree as untracked files, and a new
    module changes what runs only once a tracked file imports it, which makes the tree dirty.

    Example:
        >>> code_version(paths=("training", "src"))
        '5fe7331c0d2e...'
    """
    root = Path(root)
    if not (root / ".git").exists():  # a copied bundle (the Space's) inside another repo is not that repo
        return UNKNOWN
    try:
        sha = _git(root, "rev-parse", "HEAD")
        changed = _git(root, "status", "--porcelain", "--untracked-files=no", "--", *paths)
    except (OSError, subprocess.CalledProcessError):  # no git, or not a repository after all
        return UNKNOWN
    return sha + (DIRTY if changed else "")


def package_versions() -> dict[str, str]:
    """Python's version and that of each installed distribution in ``PACKAGES`` (no package imported).

    Example:
        >>> package_versions()
        {'python': '3.12.3', 'numpy': '2.1.3', 'keras': '3.8.0', 'tensorflow-cpu': '2.18.0', ...}
    """
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:  # reads the installed metadata only: importing TensorFlow to ask would cost seconds
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def run_metadata(*, model_name: str, model_file: str | os.PathLike, model_repo: str | None = None,
                 model_revision: str | None = None) -> dict[str, Any]:
    """The JSON-ready record of what made a run's outputs: code, packages and model.

    ``model_repo`` and ``model_revision`` (the commit sha, preferably) name a Hub model; without a
    repo the model is a local folder, named by its path. ``model_file`` is the ``model.keras``
    whose sha256 identifies the weights either way.

    Example:
        >>> run_metadata(model_name="m", model_file=source.path("model.keras"),
        ...              model_repo=source.repo_id, model_revision=source.commit)
        {'code_version': '5fe7...', 'packages': {...}, 'model': {'name': 'm', 'repo': 'a/b', ...}}
    """
    model_file = Path(model_file)
    folder = None if model_repo else str(model_file.resolve().parent)
    return {
        "code_version": code_version(),
        "packages": package_versions(),
        "model": {"name": model_name, "repo": model_repo, "revision": model_revision, "folder": folder,
                  "sha256": file_sha256(model_file)},
    }


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
