"""Refuse ``.keras`` files that could run code when loaded, before Keras reads them.

Keras' own ``safe_mode=True`` (used by the predictor as well) refuses Python lambdas; this
check runs first, on the archive's ``config.json`` alone, and also refuses custom
(non-Keras) classes and layers that pull in other artifacts, so the message can name the
offending layer. A served model should consist of built-in Keras objects only.

Example:
    >>> unsafe_parts("hub_model/model.keras")
    []
    >>> unsafe_parts("lambda_model.keras")
    ["Lambda layer 'double'"]
"""
from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator
from typing import Any

from imageclf.errors import ModelError

# Built-in layers that still load code or other files: a Python function, a TF SavedModel.
CODE_LAYERS = frozenset({"Lambda", "TFSMLayer"})
# Keras' own markers for serialized values (tensors, tuples); "__lambda__" is Python bytecode.
_MARKERS_OK = frozenset({"__keras_tensor__", "__tuple__", "__numpy__", "__bytes__",
                         "__tensor__", "__typespec__", "__slice__", "__ellipsis__"})


class UnsafeModelError(ModelError, ValueError):
    """The file is not a readable ``.keras`` archive; the message is one line for people."""

def unsafe_parts(path: str | os.PathLike) -> list[str]:
    """Every object in the model config that is not a plain built-in Keras object, in words.

    Example:
        >>> unsafe_parts("custom.keras")
        ["custom class 'Custom>Scale' (module 'my_layers')"]

    Raises:
        UnsafeModelError: not a zip archive, or no readable ``config.json`` inside.
    """
    problems: list[str] = []
    for entry in _objects(archive_config(path)):
        problem = _problem(entry)
        if problem and problem not in problems:
            problems.append(problem)
    return problems


def archive_config(path: str | os.PathLike) -> Any:
    """The model config inside a ``.keras`` archive (its ``config.json``), read without Keras.

    Raises:
        UnsafeModelError: not a zip archive, or no readable ``config.json`` inside.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as err:
        raise UnsafeModelError(f"{os.fspath(path)} is not a readable .keras archive "
                               f"(damaged or incomplete?): {err}") from None


def _objects(node: Any) -> Iterator[dict[str, Any]]:
    """Every serialized object (a dict with ``class_name``) anywhere in the config."""
    if isinstance(node, dict):
        if "class_name" in node:
            yield node
        for value in node.values():
            yield from _objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from _objects(value)


def _problem(entry: dict[str, Any]) -> str | None:
    name = str(entry.get("class_name"))
    module = entry.get("module")
    registered = entry.get("registered_name")
    config = entry.get("config")
    layer = config.get("name") if isinstance(config, dict) else None
    if name in CODE_LAYERS:
        return f"{name} layer {layer!r}"
    if name == "__lambda__":
        return "a Python function (bytecode)"
    if module is None:
        return None if name in _MARKERS_OK else f"unknown object {name!r}"
    if not (module == "keras" or str(module).startswith("keras.")):
        return f"custom class {registered or name!r} (module {module!r})"
    if registered is not None and registered != name:  # "package>Name": registered custom object
        return f"custom class {registered!r} (module {module!r})"
    return None
