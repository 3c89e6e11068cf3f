"""``training/`` is organised by step; a module imports only from its own step or an earlier one.

The steps, in order: ``data`` -> ``models`` -> ``calibration`` -> ``evaluation`` -> ``transfer`` -> ``export``,
then ``train.py`` on top. ``runtime`` (devices, tracking, code version) may be imported from anywhere, and
nothing imports ``training.train``: it is the command, not a library.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

STEPS = ("data", "models", "calibration", "evaluation", "gate", "transfer", "export")
ANYWHERE = ("runtime",)
TRAINING = ROOT / "training"


def _imported_modules(path: Path) -> set[str]:
    """Every ``training.*`` module named by an import anywhere in ``path`` (function-level ones included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "training":  # from training import data
            found |= {f"training.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name.split(".")[0] == "training"}


def _step(module: str) -> str | None:
    """The step a dotted ``training.<step>...`` name belongs to; None for ``training`` and ``training.train``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STEPS + ANYWHERE else None


def test_every_training_package_is_a_known_step():
    packages = {p.parent.name for p in TRAINING.glob("*/__init__.py")}
    assert packages == set(STEPS + ANYWHERE), sorted(packages)


@pytest.mark.parametrize("path", sorted(TRAINING.rglob("*.py")), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_import_from_a_later_step(path):
    here = path.relative_to(TRAINING).parts[0]
    if here not in STEPS:
        return  # train.py may use every step; runtime/ depends on none of them (checked below)
    later = [name for name in _imported_modules(path) if _step(name) in STEPS
             and STEPS.index(_step(name)) > STEPS.index(here)]
    assert not later, f"{here}/ imports a later step: {sorted(later)}"


def test_runtime_and_steps_never_import_the_command():
    for path in sorted(TRAINING.rglob("*.py")):
        names = _imported_modules(path)
        assert not {n for n in names if n == "training.train" or n.startswith("training.train.")}, path
        if path.relative_to(TRAINING).parts[0] in ANYWHERE:
            assert not {n for n in names if _step(n) in STEPS}, f"{path.name}: runtime/ must not depend on a step"
