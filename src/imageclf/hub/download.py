"""Getting the files of one Hub repo revision: a retried metadata request, the download of that exact
commit, a check of every file against the Hub's checksum, and the cached copy when the Hub is down.

``huggingface_hub`` does the transfers and the caching (``snapshot_download``, ``hf_hub_download``,
its cache under ``HF_HOME``; ``HF_TOKEN``, ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` work as usual).
Added here: one metadata request, retried, that tells "Hub down" from "no such repo, revision or
file"; the checksums (``hub.cache``); and the cache as a fallback, said in one warning. Which files
a model needs, and where a model comes from, is ``hub.source``'s business: it names the files.

Example:
    >>> copy = download_revision("someone/some-model", revision="0123...cdef",
    ...                          required=("config.json",), optional=("README.md",))
    >>> copy.commit, copy.files["config.json"]
    ('0123...cdef', PosixPath('~/.cache/huggingface/hub/models--someone--some-model/snapshots/0123...cdef/config.json'))
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx2
from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download, try_to_load_from_cache
from huggingface_hub.errors import (HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled,
                                    RepositoryNotFoundError, RevisionNotFoundError, RevisionResolutionError)

from imageclf.errors import ModelError, first_line
from imageclf.hub.cache import cached_checksums, checksum_problem, forget_commit

COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
log = logging.getLogger("imageclf.hub.source")  # part of resolving the model source, logged as such


class HubDownloadError(ModelError, RuntimeError):
    """No intact copy of the revision, from the Hub or its cache; one line naming the repo, the revision
    and the endpoint."""

@dataclass(frozen=True)
class HubCopy:
    """The files of one revision, all in one snapshot folder of the Hub cache.

    ``commit`` is the snapshot folder's name: the commit the files really come from.
    """

    folder: Path
    files: dict[str, Path]
    commit: str | None


def download_revision(
    repo_id: str,
    *,
    revision: str,
    required: Sequence[str],
    optional: Sequence[str] = (),
    cache_dir: str | os.PathLike | None = None,
    attempts: int = 3,
    retry_wait: float = 1.0,
) -> HubCopy:
    """The ``required`` and (those present of the) ``optional`` files of ``repo_id`` at ``revision``.

    A pinned commit whose files are all cached and intact needs no network. Otherwise one request
    asks the Hub which commit the revision is and each file's checksum (``attempts`` tries, waiting
    ``retry_wait`` s, then twice that); ``snapshot_download`` fetches that exact commit, so a push
    meanwhile cannot mix two versions. Hub unreachable: the cached copy is served with one
    warning; nothing cached: an error.

    Raises:
        HubDownloadError: one line naming the repo, the revision and the endpoint.
    """
    names = (*required, *optional)
    where = f"Hub repo {repo_id} at revision {revision} (endpoint {constants.ENDPOINT})"
    pinned = bool(COMMIT_SHA.fullmatch(revision))
    if pinned:  # a commit never changes, so an intact cached copy is the answer
        cached = _cached_files(repo_id, revision, required=required, names=names, cache_dir=cache_dir)
        if cached is not None:
            log.info("Model files of %s found in the Hub cache; no download needed.", where)
            return _copy(cached)
    try:
        commit, checksums = _ask_hub(repo_id, revision, names=names, where=where, attempts=attempts,
                                     retry_wait=retry_wait)
    except _HubUnreachable as err:
        # A pinned sha was looked up (and checked) above; only a branch or tag needs the cache now.
        cached = None if pinned else _cached_files(repo_id, revision, required=required, names=names,
                                                   cache_dir=cache_dir)
        if cached is None:
            raise HubDownloadError(f"Cannot reach the Hub to get {where}: {err}; "
                                   "no intact copy is cached, so there is no model to serve.") from None
        copy = _copy(cached)
        log.warning("Cannot reach the Hub (%s); serving the cached copy of %s, commit %s, "
                    "which may be out of date.", err, where, copy.commit)
        return copy
    missing = [name for name in required if name not in checksums]
    if missing:
        raise HubDownloadError(f"{where} has no {', '.join(missing)} (commit {commit[:12]}); a model repo "
                               f"needs {', '.join(required)}.")
    files = _download(repo_id, commit, checksums, required=required, where=where, cache_dir=cache_dir)
    if not pinned:  # now that the copy is complete and intact, the Hub-down fallback may use it
        _remember_revision(repo_id, revision, commit, cache_dir=cache_dir)
    return _copy(files)


class _HubUnreachable(Exception):
    """No answer from the Hub (network, DNS, timeout, 5xx, offline mode); the text says why."""

def _copy(files: dict[str, Path]) -> HubCopy:
    # .../snapshots/<commit sha>/, spelled one way whether it came from a download or the cache
    folder = Path(os.path.realpath(next(iter(files.values())).parent))
    commit = folder.name if COMMIT_SHA.fullmatch(folder.name) else None
    return HubCopy(folder=folder, files={name: folder / path.name for name, path in files.items()}, commit=commit)


def _ask_hub(repo_id: str, revision: str, *, names: Sequence[str], where: str, attempts: int,
             retry_wait: float) -> tuple[str, dict[str, str]]:
    """The commit ``revision`` points to now, and the Hub's checksum of each named file there.

    The checksum is the LFS sha256 for LFS files, the git blob sha1 for the others. This request
    tells "down" (retried, then ``_HubUnreachable``) from "refused" (an error); ``snapshot_download``
    would fall back to the cache without saying so.
    """
    reason = "no attempt made"
    for attempt in range(max(1, attempts)):
        if attempt:
            time.sleep(retry_wait * 2 ** (attempt - 1))
        try:
            info = HfApi().model_info(repo_id, revision=revision, files_metadata=True,
                                      timeout=constants.HF_HUB_ETAG_TIMEOUT)
            checksums = {s.rfilename: s.lfs.sha256 if s.lfs else (s.blob_id or "")
                         for s in (info.siblings or []) if s.rfilename in names}
            return str(info.sha), checksums
        except RevisionNotFoundError:
            raise HubDownloadError(f"Cannot get {where}: that revision does not exist.") from None
        except RepositoryNotFoundError:
            raise HubDownloadError(f"Cannot get {where}: the repo does not exist, or it is private "
                                   "and HF_TOKEN is missing or has no access.") from None
        except OfflineModeIsEnabled:
            raise _HubUnreachable("HF_HUB_OFFLINE is set") from None
        except HfHubHTTPError as err:
            status = err.response.status_code if err.response is not None else 0
            if status < 500 and status != 429:
                why = {401: "the Hub rejected the token (check HF_TOKEN)",
                       403: "the token has no access to this repo"}.get(status, "the Hub refused")
                raise HubDownloadError(f"Cannot get {where}: {why} (HTTP {status}).") from None
            reason = f"HTTP {status}"
        except (httpx2.TransportError, ConnectionError, TimeoutError) as err:
            reason = f"{type(err).__name__}: {first_line(err)}"
        log.debug("Hub metadata request %d/%d for %s failed: %s", attempt + 1, attempts, where, reason)
    raise _HubUnreachable(f"{attempts} attempt(s) failed, last: {reason}")


def _download(repo_id: str, commit: str, checksums: dict[str, str], *, required: Sequence[str], where: str,
              cache_dir: str | os.PathLike | None) -> dict[str, Path]:
    """The files of ``commit``, each checked against ``checksums``; a missing or bad one is fetched again."""
    try:  # all files in one call; whatever fails here gets a second, forced try below
        snapshot_download(repo_id, revision=commit, allow_patterns=list(checksums), cache_dir=cache_dir)
    except Exception as err:  # network, HTTP or size-check failure: one line, not a traceback
        log.warning("Downloading %s failed: %s", where, first_line(err))
    files: dict[str, Path] = {}
    for name, checksum in checksums.items():
        path = try_to_load_from_cache(repo_id, name, revision=commit, cache_dir=cache_dir)
        problem = checksum_problem(Path(path), checksum) if isinstance(path, str) else "not downloaded"
        if problem:
            if isinstance(path, str):
                log.warning("%s of %s is damaged (%s); fetching it again.", name, where, problem)
            try:
                path = hf_hub_download(repo_id, name, revision=commit, cache_dir=cache_dir, force_download=True)
                problem = checksum_problem(Path(path), checksum)
            except Exception as err:
                problem = first_line(err)
        if not problem:
            files[name] = Path(path)
        elif name not in required:
            log.info("Optional %s not used: %s", name, problem)
        else:
            forget_commit(commit, cache_dir=cache_dir)  # never leave a bad copy for the next start
            raise HubDownloadError(f"Could not download an intact {name} from {where} "
                                   f"(commit {commit[:12]}), tried twice: {problem}")
    return files


def _cached_files(repo_id: str, revision: str, *, required: Sequence[str], names: Sequence[str],
                  cache_dir: str | os.PathLike | None) -> dict[str, Path] | None:
    """The revision's files from the Hub cache, without network, if every required one is there and intact.

    A branch or tag is looked up in the cache's record of what it last pointed to.
    """
    try:  # required files only: an optional one that failed to download does not spoil the copy
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=list(required),
                                        cache_dir=cache_dir, local_files_only=True))
    except LocalEntryNotFoundError:  # not cached, or cached only in part
        return None
    files = {name: folder / name for name in names if (folder / name).is_file()}
    if not all(name in files for name in required):
        return None
    blobs = cached_checksums(repo_id, folder.name, cache_dir=cache_dir)
    for name, path in files.items():
        problem = checksum_problem(path, blobs.get(name, ""))
        if problem:
            log.warning("Cached %s of %s@%s is damaged (%s); not using it.", name, repo_id, revision, problem)
            return None
    return files


def _remember_revision(repo_id: str, revision: str, commit: str, *,
                       cache_dir: str | os.PathLike | None) -> None:
    """Have the library record ``revision -> commit`` in the cache, for the Hub-down fallback.

    ``resolve_revision`` records what the Hub says now (one more request, skipped when the cache
    already says ``commit``); if the branch moved since the download, the next start fetches it.
    """
    api = HfApi()
    with contextlib.suppress(RevisionResolutionError):  # raised when nothing is recorded yet
        if api.resolve_revision(repo_id, revision=revision, cache_dir=cache_dir,
                                local_files_only=True).resolved == commit:
            return
    try:
        api.resolve_revision(repo_id, revision=revision, cache_dir=cache_dir)
    except Exception as err:  # costs only the offline fallback
        log.warning("Could not record %s@%s in the Hub cache: %s", repo_id, revision, first_line(err))
