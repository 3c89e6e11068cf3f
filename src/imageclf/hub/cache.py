"""Checking Hub files against the Hub's checksums, through ``huggingface_hub``'s public cache API.

``hf_hub_download`` and ``snapshot_download`` check only the size of what they download. The
Hub's checksum of a file is its sha256 for LFS files and its git blob sha1 for the others:
``HfApi.model_info(..., files_metadata=True)`` lists it, and the cache names each blob after
the one the Hub sent with the file, which ``scan_cache_dir`` reports, so a damaged or tampered
copy is found online and offline. Nothing here writes into the cache by hand: a bad copy is
removed with the library's own ``delete_revisions``.

Example:
    >>> checksum_problem(path, cached_checksums("a/b", sha)["model.keras"])  # None: intact
    >>> forget_commit(sha)  # drop a copy that stayed damaged
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

from huggingface_hub import constants, scan_cache_dir

from imageclf.hashing import file_sha256

_SHA256 = re.compile(r"[0-9a-f]{64}")
_SHA1 = re.compile(r"[0-9a-f]{40}")
log = logging.getLogger("imageclf.hub.source")  # part of resolving the model source, logged as such


def checksum_problem(path: Path, expected: str) -> str | None:
    """What is wrong with a file given the Hub's checksum of it; ``None`` when it matches.

    Example:
        >>> checksum_problem(Path("labels.json"), "1f2e...")  # the git blob sha1 of other bytes
        "checksum 9a8b7c6d5e4f... does not match the Hub's 1f2e... (412 bytes)"
    """
    if _SHA256.fullmatch(expected):
        actual = file_sha256(path)
    elif _SHA1.fullmatch(expected):
        data = path.read_bytes()  # regular (non-LFS) files are small
        actual = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    else:
        return None  # no checksum known (e.g. a cache without symlinks): nothing to compare
    if actual == expected:
        return None
    return f"checksum {actual[:12]}... does not match the Hub's {expected[:12]}... ({path.stat().st_size} bytes)"


def cached_checksums(repo_id: str, commit: str, *,
                     cache_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """File name -> the checksum the Hub sent with it, for one cached commit of a model repo (offline).

    Example:
        >>> cached_checksums("a/b", sha)
        {'model.keras': '5c7b5a09897e...', 'labels.json': '0d1f...', ...}
    """
    # CachedFileInfo.blob_path is the repo's own blob entry, named after that checksum (not the
    # shared store entry a Xet download may link it to, which is named after the Xet hash).
    for repo in scan_cache_dir(cache_dir or constants.HF_HUB_CACHE).repos:
        if (repo.repo_id, repo.repo_type) == (repo_id, "model"):
            for cached in repo.revisions:
                if cached.commit_hash == commit:
                    return {f.file_name: f.blob_path.name for f in cached.files}
    return {}


def forget_commit(commit: str, *, cache_dir: str | os.PathLike | None = None) -> None:
    """Delete one cached commit (its snapshot, the refs to it, blobs no other commit uses).

    Example:
        >>> forget_commit(sha)  # the next download of ``sha`` starts from nothing
    """
    try:
        scan_cache_dir(cache_dir or constants.HF_HUB_CACHE).delete_revisions(commit).execute()
    except Exception as err:  # the next start checks the copy again anyway
        log.warning("Could not delete commit %s from the Hub cache: %s", commit[:12], err)
