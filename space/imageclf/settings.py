"""Every setting the Space reads from the environment, read in one place, once, at start-up.

The Hub exposes Space variables as environment variables; locally you export them. Modules take
their limits from :data:`SETTINGS` (so a test or a caller can pass other values explicitly), and
the model source and examples read their variables through :meth:`Settings.from_env`'s mapping.

| variable | meaning | default |
| --- | --- | --- |
| `MODEL_REPO`, `MODEL_REVISION` | Hub model repo and the commit it is pinned to | unset |
| `MODEL_DIR` | a local model folder instead of the Hub | `hub_model/` beside `space/` |
| `EXAMPLES_DIR` | a folder of example images | the model's `examples/` |
| `MAX_IMAGE_PIXELS`, `MAX_IMAGE_BYTES`, `MIN_IMAGE_SIDE` | decoding limits | 64 M px, 50 MiB, 8 px |
| `MAX_FIELDS` | most tissue fields classified per image | 64 |
| `GRADIO_TEMP_DIR` | where Gradio keeps uploads (read by Gradio too) | the system temp folder |

Example:
    >>> Settings.from_env({"MAX_FIELDS": "16"}).max_fields
    16
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from imageclf.errors import ModelError

__all__ = ["Settings", "SettingsError", "SETTINGS"]


class SettingsError(ModelError, ValueError):
    """An environment variable that should be a number is not."""

@dataclass(frozen=True)
class Settings:
    """The numeric limits; the model-source and example variables are read by their modules' functions."""

    max_image_pixels: int = 64_000_000
    max_image_bytes: int = 50 * 1024 * 1024
    min_image_side: int = 8
    max_fields: int = 64

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        names = {"max_image_pixels": "MAX_IMAGE_PIXELS", "max_image_bytes": "MAX_IMAGE_BYTES",
                 "min_image_side": "MIN_IMAGE_SIDE", "max_fields": "MAX_FIELDS"}
        values = {}
        for field, name in names.items():
            if env.get(name):
                try:
                    values[field] = int(env[name])
                except ValueError:
                    raise SettingsError(f"{name}={env[name]!r} is not a whole number.") from None
        return cls(**values)


SETTINGS = Settings.from_env()
