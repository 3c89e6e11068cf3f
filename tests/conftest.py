"""Shared fixtures: the bundled datasets (skip locally when absent, fail in CI) and small generated data."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

# Before the imports below: huggingface_hub, Gradio and TensorFlow read these when first imported.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tests.support.hub_server import local_hub  # noqa: E402,F401  (the local Hub-compatible endpoint fixture)
from tests.support.tiny_model import run_space, write_test_image, write_tiny_model_folder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
HUB_MODEL = ROOT / "hub_model"


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


# One Space process per model for the whole session: starting one costs seconds (the real model,
# about 10 s), so every test file that talks to a served model shares these.

@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    """The tiny test model (tests/support/tiny_model.py) that the shared tiny Space serves."""
    return write_tiny_model_folder(tmp_path_factory.mktemp("tiny") / "hub_model")


@pytest.fixture(scope="session")
def tiny_examples(tmp_path_factory) -> Path:
    """Two example images for the tiny Space's gallery (listed in name order: tile_a, tile_b)."""
    folder = tmp_path_factory.mktemp("examples")
    for i, name in enumerate(["tile_b.png", "tile_a.png"]):
        write_test_image(folder / name, seed=60 + i)
    return folder


@pytest.fixture(scope="session")
def tiny_space(tiny_folder, tiny_examples) -> Iterator[str]:
    """URL of the Space on the tiny model, with every optional part on: MCP tools and examples."""
    with run_space(tiny_folder, env={"GRADIO_MCP_SERVER": "true", "EXAMPLES_DIR": str(tiny_examples)}) as url:
        yield url


@pytest.fixture(scope="session")
def abstaining_folder(tmp_path_factory) -> Path:
    """A tiny model whose confidence floor (1.0) makes it abstain on every image."""
    return write_tiny_model_folder(tmp_path_factory.mktemp("abstaining") / "hub_model",
                                   config_extra={"abstain": {"method": "softmax", "min_confidence": 1.0}})


@pytest.fixture(scope="session")
def abstaining_space(abstaining_folder) -> Iterator[str]:
    with run_space(abstaining_folder, env={"GRADIO_MCP_SERVER": "true"}) as url:
        yield url


@pytest.fixture(scope="session")
def hub_space() -> Iterator[str]:
    """URL of the Space on the bundled model (MODEL_DIR unset: the app's default hub_model/), MCP on, with
    the CC0 CMU slide as the Slide tab's example when the data is there."""
    if not (HUB_MODEL / "model.keras").is_file():
        missing(f"the bundled model is not at {HUB_MODEL}")
    example = SHARED_DATA / "wsi" / "CMU-1-Small-Region.svs"
    env = {"GRADIO_MCP_SERVER": "true", **({"EXAMPLE_SLIDE": str(example)} if example.is_file() else {})}
    with run_space(None, env=env) as url:
        yield url


# The slow tier: whole trainings, real-model Spaces, browsers, benchmarks, and fresh interpreters
# importing TensorFlow (marked on the test). `make check` runs the rest (`-m "not slow"`, under
# 90 s); `make test` (and CI) runs everything.
SLOW_MODULES = {"test_browser", "test_space_speed", "test_compare_peers", "test_distributed", "test_data_splits",
                "test_hub_faults", "test_notebooks", "test_other_models", "test_roundtrip",
                "test_space_reliability", "test_tracking", "test_training"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
