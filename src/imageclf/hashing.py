"""The sha256 of a file, read in 1 MiB chunks: the one helper that pins model, runtime and
parameter files and names local models.

Example:
    >>> file_sha256("hub_model/labels.json")[:12]
    '3f1c0a9b2e77'
"""
from __future__ import annotations

import hashlib
import os

__all__ = ["file_sha256"]


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of the file at ``path`` (memory stays flat whatever its size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
