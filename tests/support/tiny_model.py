"""Test helpers: a tiny ``hub_model``-style folder, and the Space running on one.

The tiny model follows the real contract (RGB uint8 in, softmax out, scaling inside the
model) but is untrained: its weights come from fixed seeds, so every run gives the same
probabilities. The class names are deliberately not lung classes, so a test using them
proves the Space takes every name from the model files.

Example:
    >>> folder = write_tiny_model_folder(tmp_path / "hub_model")
    >>> with run_space(folder) as url:
    ...     Client(url).predict(handle_file("tile.png"), api_name="/predict")
"""
from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from imageclf import settings
from scripts.perf.local_space import SpaceProcess

REPO_ROOT = Path(__file__).resolve().parents[2]   # tests/support/ -> the repository
DEFAULT_LABELS: tuple[tuple[str, str], ...] = (
    ("alpha", "Alpha tissue"),
    ("beta", "Beta tissue"),
    ("gamma", "Gamma tissue"),
)


def write_tiny_model_folder(
    folder: str | os.PathLike,
    *,
    input_size: tuple[int, int] = (64, 64),
    labels: Sequence[tuple[str, str]] = DEFAULT_LABELS,
    config_extra: Mapping[str, Any] | None = None,
    seed: int = 7,
) -> Path:
    """Write model.keras, labels.json, config.json, metrics.json and README.md to ``folder``.

    Example:
        >>> write_tiny_model_folder(tmp_path / "m", labels=[("a", "A"), ("b", "B")])
        PosixPath('/tmp/.../m')
    """
    import keras  # deferred: 3 s, and conftest imports this module in every session

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    height, width = input_size
    init = keras.initializers
    inputs = keras.Input(shape=(height, width, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu",
                            kernel_initializer=init.GlorotUniform(seed=seed),
                            bias_initializer=init.RandomUniform(-0.1, 0.1, seed=seed + 1))(x)
    x = keras.layers.GlobalAveragePooling2D(name="features")(x)   # what a feature_ood check reads
    # Large weights so images of different colours get clearly different probabilities.
    outputs = keras.layers.Dense(len(labels), activation="softmax",
                                 kernel_initializer=init.RandomNormal(stddev=3.0, seed=seed + 2),
                                 bias_initializer="zeros")(x)
    keras.Model(inputs, outputs, name="tiny").save(folder / "model.keras")

    ids = [class_id for class_id, _ in labels]
    _write_json(folder / "labels.json",
                {str(i): {"id": cid, "name": name} for i, (cid, name) in enumerate(labels)})
    _write_json(folder / "config.json", {
        "model_name": "tiny-test-model",
        "input_size": [height, width],
        "channel_order": "RGB",
        "dtype": "uint8",
        "labels": ids,
        "domain": "synthetic test images",
        "disclaimer": "Test model. Not a diagnostic device.",
        **(config_extra or {}),
    })
    _write_json(folder / "metrics.json", {"accuracy": 0.5, "macro_f1": 0.4})
    (folder / "README.md").write_text("# tiny-test-model\n\nUntrained, for tests.\n")
    return folder


def write_test_image(path: str | os.PathLike, *, size: tuple[int, int] = (48, 80),
                     seed: int = 0) -> Path:
    """Write a random RGB PNG (lossless, so client and server see identical pixels)."""

    rgb = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    path = Path(path)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"Could not write {path}")
    return path


@contextlib.contextmanager
def run_space(model_dir: str | os.PathLike | None, *, env: Mapping[str, str] | None = None,
              timeout: float = 180.0) -> Iterator[str]:
    """Run ``python space/app.py`` as a subprocess on 127.0.0.1 and yield its URL.

    ``model_dir=None`` leaves MODEL_DIR unset (the app's default ``hub_model/``).
    """
    with SpaceProcess(model_dir=model_dir, env=env, timeout=timeout) as space:
        yield space.url


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


@contextlib.contextmanager
def imported_app(monkeypatch, model_dir: str | os.PathLike, *,
                 examples_dir: str | os.PathLike | None = None) -> Iterator[Any]:
    """``space/app.py`` imported in-process (it loads the model at import) on ``model_dir``;
    forgotten again afterwards, so the next import reads its settings afresh."""
    monkeypatch.setenv("MODEL_DIR", str(model_dir))
    monkeypatch.delenv("MODEL_REPO", raising=False)
    if examples_dir is None:
        monkeypatch.delenv("EXAMPLES_DIR", raising=False)
    else:
        monkeypatch.setenv("EXAMPLES_DIR", str(examples_dir))
    monkeypatch.setattr(settings, "SETTINGS", settings.Settings.from_env())   # a fresh start reads them again
    monkeypatch.delitem(sys.modules, "app", raising=False)
    try:
        yield importlib.import_module("app")
    finally:
        sys.modules.pop("app", None)


def run_ui_event(app, fn_name: str, inputs: list) -> dict:
    """Run one private UI event of an imported ``app`` module through Gradio's own pre/postprocessing,
    as a browser click would; returns {elem_id (or type#index): value}."""
    from gradio.state_holder import SessionState  # deferred: 2.4 s, only in-process UI tests need it

    fn = next(f for f in app.demo.fns.values() if f.name == fn_name)
    out = asyncio.run(app.demo.process_api(block_fn=fn, inputs=inputs, state=SessionState(app.demo)))
    return {(c.elem_id or type(c).__name__.lower()) + ("" if c.elem_id else f"#{i}"): value
            for i, (c, value) in enumerate(zip(fn.outputs, out["data"], strict=True))}
