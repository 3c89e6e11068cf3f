"""Shared parts of ``scripts/perf/load_test.py`` and ``scripts/perf/soak_test.py``: target, images, requests.

The target is either a running Space (``--url``, and for memory figures ``--pid``) or one
these scripts start themselves (``--model-dir``, default ``hub_model``).

Example:
    ```python
    >>> parser = argparse.ArgumentParser(); add_target_arguments(parser)
    >>> args = parser.parse_args(["--model-dir", "hub_model"])
    >>> with space_target(args) as (url, pid):
    ...     client = connect(url)
    ...     classify(client, sample_images([], count=1, out_dir=Path("/tmp"))[0])
    ```
"""
from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from gradio_client import handle_file

from imageclf.errors import ModelError
from scripts.perf.local_space import SpaceProcess
from scripts.predict_client import list_images


class BadAnswerError(ModelError, RuntimeError):
    """The Space answered, but not with a classification (no ``label``)."""

def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """``--url``/``--pid`` (a running Space) or ``--model-dir`` (start one), and ``--images``."""
    parser.add_argument("--url", help="a running Space, e.g. http://127.0.0.1:7860 (default: start one)")
    parser.add_argument("--pid", type=int, help="server process id of --url, for memory figures")
    parser.add_argument("--model-dir", default="hub_model",
                        help="model folder of the Space started when --url is not given (default: hub_model)")
    parser.add_argument("--images", nargs="*", default=[],
                        help="image files or folders to send (default: generated 224 x 224 PNGs)")


@contextlib.contextmanager
def space_target(args: argparse.Namespace) -> Iterator[tuple[str, int | None]]:
    """Yield ``(url, server pid or None)``: the given Space, or one started for the run."""
    if args.url:
        yield args.url.rstrip("/"), args.pid
        return
    with SpaceProcess(model_dir=args.model_dir) as space:
        yield space.url, space.pid


def sample_images(sources: Sequence[str | os.PathLike], *, count: int, out_dir: Path) -> list[Path]:
    """Up to ``count`` image files from ``sources`` (files or folders, spread evenly over sorted
    names); with no sources, ``count`` generated 224 x 224 PNGs written to ``out_dir``."""
    files: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            files += list_images(source)
        elif source.is_file():
            files.append(source)
        else:
            raise FileNotFoundError(f"No such image file or folder: {source}")
    if sources:
        if not files:
            raise FileNotFoundError(f"No images in {', '.join(map(str, sources))}")
        step = max(1, len(files) // count)
        return files[::step][:count]

    out_dir.mkdir(parents=True, exist_ok=True)
    generated = []
    for seed in range(count):
        rgb = np.random.default_rng(seed).integers(0, 256, (224, 224, 3), dtype=np.uint8)
        path = out_dir / f"generated-{seed}.png"
        cv2.imwrite(str(path), rgb)
        generated.append(path)
    return generated


def classify(client: Any, image: Path) -> Any:
    """One ``/predict`` call; raises ``BadAnswerError`` unless the answer carries a ``label``."""

    answer = client.predict(handle_file(str(image)), api_name="/predict")
    if not has_label(answer):
        raise BadAnswerError(f"answer without a label: {str(answer)[:200]}")
    return answer


def has_label(answer: Any) -> bool:
    """True for a Label dict, or a tuple/list of outputs containing one (the endpoint may grow outputs)."""
    if isinstance(answer, dict):
        return bool(answer.get("label"))
    if isinstance(answer, (tuple, list)):
        return any(has_label(part) for part in answer)
    return False


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0..100) of a non-empty sequence (numpy's default method).

    Example:
        >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
        2.5
    """
    return float(np.percentile(np.asarray(values, dtype=float), q))
