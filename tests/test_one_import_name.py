"""Every shared module has one import name: imageclf.<module>. Two names would mean two copies of
each class (an ``except`` or ``isinstance`` across them silently misses) and of each setting."""
from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import imageclf

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(info.name for info in pkgutil.iter_modules(imageclf.__path__))


def test_the_package_lives_in_the_space_folder():
    assert Path(imageclf.__file__).parent == ROOT / "space" / "imageclf"
    assert {"imaging", "model_config", "scale", "analysis", "predictor", "errors"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_no_second_name(module):
    importlib.import_module(f"imageclf.{module}")
    with pytest.raises(ImportError):      # the flat name the Space's folder once offered
        importlib.import_module(module)
    with pytest.raises(ImportError):      # the path through the space/ folder from the repo root
        importlib.import_module(f"space.imageclf.{module}")


@pytest.mark.slow
def test_whole_project_loads_each_module_file_once():
    """Import everything training, scripts and the Space use, in a fresh process; no file twice."""
    code = ("import sys, importlib, pkgutil, imageclf\n"
            "for m in pkgutil.iter_modules(imageclf.__path__): importlib.import_module('imageclf.' + m.name)\n"
            "import training.train, training.calibration.scale_reference, training.evaluation.evaluate, training.export.card\n"
            "import scripts.predict_client, scripts.release.push_model, scripts.release.deploy_space\n"
            "files = [getattr(m, '__file__', None) for m in list(sys.modules.values())]\n"
            "ours = [f for f in files if f and '/space/' in f]\n"
            "assert len(ours) == len(set(ours)), sorted(f for f in ours if ours.count(f) > 1)\n"
            "print(len(ours))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.strip()) >= len(MODULES)
