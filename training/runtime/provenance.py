"""Which code a training run executes, and the rule that a model is exported from committed code only.

The version is ``imageclf.provenance.code_version`` narrowed to the code an export runs (``training/``
and the shared package in ``src/``): edits to docs or to an earlier ``hub_model/`` do not count.
An export from uncommitted code would record a version no commit holds, so ``checked_code_version``
refuses it unless allowed (``--allow-dirty`` of ``training.train`` and of this module's check, which
``make train`` runs first so that the refusal comes before an hour of training, not after).

Example:
    >>> code_version()
    '5fe7331c...+dirty'      # '+dirty': the training code has uncommitted changes
    >>> checked_code_version(allow_dirty=False)
    DirtyTreeError: The training code in /.../main has uncommitted changes ... commit them or pass --allow-dirty ...

Usage (the check alone; prints the version that would be recorded):
    .venv/bin/python -m training.runtime.provenance [--allow-dirty]
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from imageclf import provenance
from imageclf.errors import ModelError

REPO_ROOT = Path(__file__).resolve().parents[2]
TRAINING_CODE = ("training", "src")   # what a training run and its export execute


class DirtyTreeError(ModelError, RuntimeError):
    """An export was asked for from training code with uncommitted changes, without ``--allow-dirty``."""

@dataclass(frozen=True)
class CheckedVersion:
    """The code version an export records, and whether uncommitted changes were allowed into it."""

    code_version: str
    dirty_tree_allowed: bool = False


def code_version(*, root: str | os.PathLike = REPO_ROOT) -> str:
    """The git commit of the training code, with '+dirty' when it has uncommitted changes."""
    return provenance.code_version(root, paths=TRAINING_CODE)


def checked_code_version(*, allow_dirty: bool, root: str | os.PathLike = REPO_ROOT) -> CheckedVersion:
    """The training code's version for an export; uncommitted changes refused unless ``allow_dirty``.

    Example:
        >>> checked_code_version(allow_dirty=True)
        CheckedVersion(code_version='5fe7331c...+dirty', dirty_tree_allowed=True)

    Raises:
        DirtyTreeError: tracked files under ``training/`` or ``src/`` have uncommitted changes.
    """
    version = code_version(root=root)
    dirty = version.endswith(provenance.DIRTY)
    if dirty and not allow_dirty:
        raise DirtyTreeError(
            f"The training code in {Path(root).resolve()} has uncommitted changes (tracked files under "
            f"{' or '.join(f'{path}/' for path in TRAINING_CODE)}), so no commit would hold the code that "
            "made this export: commit or pass --allow-dirty (the export then records its code version "
            "with '+dirty' and training_run.dirty_tree_allowed).")
    return CheckedVersion(code_version=version, dirty_tree_allowed=dirty)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check that the training code is committed before an export.")
    parser.add_argument("--allow-dirty", action="store_true", help="allow uncommitted changes (recorded)")
    args = parser.parse_args(argv)
    try:
        checked = checked_code_version(allow_dirty=args.allow_dirty)
    except DirtyTreeError as err:
        print(err, file=sys.stderr)
        return 1
    print(f"code version: {checked.code_version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
