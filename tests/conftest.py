"""Shared fixtures: the bundled datasets (skip locally when absent, fail in CI) and small generated data."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
HUB_MODEL = ROOT / "hub_model"

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def require_dataset(name: str) -> Path:
    """Path of a shared dataset; skip when it is missing, but fail under CI=true where it must exist."""
    path = SHARED_DATA / name
    if not path.is_dir():
        missing(f"dataset {name!r} not found at {path} (it lives in ../shared/data beside the project)")
    return path


def missing(message: str, *, ci_hint: str = "CI must have it") -> None:
    """Skip a test whose prerequisite is absent (a user's fresh clone); fail under CI=true."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} -- {ci_hint}")
    pytest.skip(message)


@pytest.fixture(scope="session")
def lung_data() -> Path:
    return require_dataset("lc25000-lung-224")


@pytest.fixture(scope="session")
def lung_tile(lung_data) -> Path:
    """One real test-split tile per class, from the committed manifest."""
    return lung_data / "lung_scc" / "lungscc1.jpeg"


def make_image_dataset(root: Path, *, classes=("alpha", "beta", "gamma"), per_class=24, size=40, groups_of=3) -> Path:
    """A class-per-folder PNG dataset whose classes differ by colour, plus a groups.csv."""
    import cv2

    rng = np.random.default_rng(0)
    lines = ["path,label,group"]
    for ci, cls in enumerate(classes):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
            img[..., ci % 3] += 140
            rel = f"{cls}/{cls}{i}.png"
            cv2.imwrite(str(root / rel), img)
            lines.append(f"{rel},{cls},{cls}-{i // groups_of}")
    (root / "groups.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    return make_image_dataset(tmp_path_factory.mktemp("tiny_dataset"))


from tests.hub_server import local_hub  # noqa: E402,F401  (the local Hub-compatible endpoint fixture)


# The slow tier: whole trainings, real-model Spaces, browsers, benchmarks. `make check` runs the
# rest (`-m "not slow"`); `make test` (and CI) runs everything.
SLOW_MODULES = {"test_browser", "test_bench_space", "test_benchmark", "test_distributed", "test_folders",
                "test_hub_faults", "test_notebooks", "test_other_models", "test_roundtrip",
                "test_space_reliability", "test_tracking", "test_training"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
