"""Two jobs on the Hugging Face Hub cache that ``huggingface_hub`` leaves to its callers.

- ``checksum_problem``: ``hf_hub_download`` checks only the size of what it downloads; the cache
  names every blob after the Hub's checksum (sha256 for LFS files, git sha1 otherwise), so a
  damaged or tampered copy can be detected at every start, offline too.
- ``remember_ref``: a download by commit sha does not record which commit a branch pointed to;
  recording it lets a later start fall back to the cache for that branch when the Hub is down.

Example:
    >>> checksum_problem(Path(hf_hub_download("a/b", "model.keras", revision=sha)))  # intact
    >>> remember_ref("a/b", "main", sha, cache_dir=None)
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

_SHA1 = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
log = logging.getLogger("model_source")


def checksum_problem(path: Path) -> str | None:
    """Compare a cached file with its blob name (the Hub's sha256 for LFS, git sha1 otherwise)."""
    expected = path.resolve().name
    if _SHA256.fullmatch(expected):
        digest = hashlib.sha256()
        with path.open("rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
        actual = digest.hexdigest()
    elif _SHA1.fullmatch(expected):
        data = path.read_bytes()  # regular (non-LFS) files are small
        actual = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    else:
        return None  # not a Hub cache blob (e.g. a copy without symlinks): nothing to compare
    if actual == expected:
        return None
    return f"checksum {actual[:12]}... does not match the Hub's {expected[:12]}... ({path.stat().st_size} bytes)"


def remember_ref(repo_id: str, revision: str, commit: str, *, cache_dir: str | os.PathLike | None) -> None:
    """Record ``revision -> commit`` in the Hub cache (``refs/``), as a download by name would."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    ref = Path(cache_dir or constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")
    ref = ref / "refs" / revision
    try:
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(commit)
    except OSError as err:  # a read-only cache only costs the offline fallback
        log.warning("Could not record %s@%s in the Hub cache: %s", repo_id, revision, err)
