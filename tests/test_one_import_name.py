"""The shared package lives in ``src/imageclf`` and is imported under that one name; the Space's own
modules live beside ``app.py``. Two names for one file would mean two copies of each class (an
``except`` or ``isinstance`` across them silently misses) and of each setting."""
from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import imageclf

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(info.name for info in pkgutil.walk_packages(imageclf.__path__, "imageclf."))
SPACE_ONLY = ("service", "panels", "batching", "uploads", "examples", "slide_tab")


def test_the_package_lives_in_src_and_no_module_of_it_under_space():
    assert Path(imageclf.__file__).parent == ROOT / "src" / "imageclf"
    assert {"imageclf.core.rule", "imageclf.core.refusal", "imageclf.core.engine", "imageclf.model.predictor",
            "imageclf.hub.source", "imageclf.settings"} <= set(MODULES)
    assert not list((ROOT / "space").rglob("__init__.py")), "space/ is the Space's folder, not a package"
    names = {path.stem for path in (ROOT / "src" / "imageclf").rglob("*.py")}
    assert not names & {path.stem for path in (ROOT / "space").glob("*.py")} - {"__init__"}


@pytest.mark.parametrize("module", SPACE_ONLY)
def test_space_only_modules_sit_beside_app_and_import_nothing_from_the_space_into_the_package(module):
    assert (ROOT / "space" / f"{module}.py").is_file()
    importlib.import_module(module)   # the Space's folder is on the path (pytest.ini), as for app.py
    for path in (ROOT / "src" / "imageclf").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert f"import {module}\n" not in text and f"from {module} import" not in text, path


@pytest.mark.slow
def test_whole_project_loads_each_module_file_once():
    """Import everything training, scripts and the Space use, in a fresh process; no file twice."""
    code = ("import sys, importlib, pkgutil, imageclf\n"
            "for m in pkgutil.walk_packages(imageclf.__path__, 'imageclf.'): importlib.import_module(m.name)\n"
            "sys.path.insert(0, 'space')\n"
            "import service, panels, batching, uploads, examples, slide_tab\n"
            "import training.train, training.calibration.scale_reference, training.evaluation.evaluate, training.export.card\n"
            "import scripts.predict_client, scripts.release.push_model, scripts.release.deploy_space\n"
            "files = [getattr(m, '__file__', None) for m in list(sys.modules.values())]\n"
            "ours = [f for f in files if f and ('/src/imageclf/' in f or '/space/' in f)]\n"
            "assert len(ours) == len(set(ours)), sorted(f for f in ours if ours.count(f) > 1)\n"
            "print(len(ours))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.strip()) >= len(MODULES) + len(SPACE_ONLY)
