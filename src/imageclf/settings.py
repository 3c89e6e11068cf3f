"""Every setting read from the environment, read here only, once, at start-up.

The Hub exposes Space variables as environment variables; locally you export them. Code takes
its values from :data:`SETTINGS` at call time (so a test or a caller can pass another
:class:`Settings`); nothing else in the package reads ``os.environ``.

| variable | meaning | default |
| --- | --- | --- |
| `MODEL_REPO`, `MODEL_REVISION` | Hub model repo and the commit it is pinned to | unset |
| `MODEL_DIR` | a local model folder instead of the Hub | `hub_model/` of the repository |
| `EXAMPLES_DIR` | a folder of example images | the model's `examples/` |
| `EXAMPLE_SLIDE` | the Slide tab's example whole-slide image | the first slide in `space/example_slides/` |
| `MAX_IMAGE_PIXELS`, `MAX_IMAGE_BYTES`, `MIN_IMAGE_SIDE` | decoding limits | 64 M px, 50 MiB, 8 px |
| `MAX_FIELDS` | most tissue fields classified per image | 64 |
| `MODEL_RUNTIME` | `auto`: the optimised runtime when the model has one (else Keras); `keras`: always Keras | `auto` |
| `GRADIO_TEMP_DIR` | where Gradio keeps uploads (read by Gradio too) | the system temp folder's `gradio/` |

Example:
    >>> Settings.from_env({"MAX_FIELDS": "16"}).max_fields
    16
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from imageclf.errors import ModelError

__all__ = ["Settings", "SettingsError", "SETTINGS", "quiet_tensorflow"]

NUMBERS = {"max_image_pixels": "MAX_IMAGE_PIXELS", "max_image_bytes": "MAX_IMAGE_BYTES",
           "min_image_side": "MIN_IMAGE_SIDE", "max_fields": "MAX_FIELDS"}

RUNTIMES = ("auto", "keras")


class SettingsError(ModelError, ValueError):
    """An environment variable that should be a number (or one of a few words) is not."""


@dataclass(frozen=True)
class Settings:
    """The model source, examples, upload folder and numeric limits of one process."""

    model_repo: str | None = None
    model_revision: str | None = None
    model_dir: Path | None = None
    examples_dir: Path | None = None
    example_slide: Path | None = None
    upload_dir: Path = Path(tempfile.gettempdir()) / "gradio"
    max_image_pixels: int = 64_000_000
    max_image_bytes: int = 50 * 1024 * 1024
    min_image_side: int = 8
    max_fields: int = 64
    model_runtime: str = "auto"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for field, name in NUMBERS.items():
            if env.get(name):
                try:
                    values[field] = int(env[name])
                except ValueError:
                    raise SettingsError(f"{name}={env[name]!r} is not a whole number.") from None
        text = {name: (env.get(name) or "").strip() or None
                for name in ("MODEL_REPO", "MODEL_REVISION", "MODEL_DIR", "EXAMPLES_DIR", "EXAMPLE_SLIDE", "GRADIO_TEMP_DIR")}
        values.update(model_repo=text["MODEL_REPO"], model_revision=text["MODEL_REVISION"],
                      model_dir=None if text["MODEL_DIR"] is None else Path(text["MODEL_DIR"]),
                      examples_dir=None if text["EXAMPLES_DIR"] is None else Path(text["EXAMPLES_DIR"]),
                      example_slide=None if text["EXAMPLE_SLIDE"] is None else Path(text["EXAMPLE_SLIDE"]))
        runtime = (env.get("MODEL_RUNTIME") or "auto").strip().lower()
        if runtime not in RUNTIMES:
            raise SettingsError(f"MODEL_RUNTIME={env['MODEL_RUNTIME']!r} is not one of {', '.join(RUNTIMES)}.")
        values["model_runtime"] = runtime
        if text["GRADIO_TEMP_DIR"]:
            values["upload_dir"] = Path(text["GRADIO_TEMP_DIR"])
        return cls(**values)


def quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ start-up chatter out of logs; call before Keras imports TensorFlow."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


SETTINGS = Settings.from_env()
