"""Where the Space gets its model folder from: the Hugging Face Hub or a local folder.

Settings (``imageclf.settings``): ``MODEL_REPO`` (a Hub repo id), ``MODEL_REVISION`` (branch, tag
or, in deployments, the commit sha to pin) or ``MODEL_DIR`` (a local folder in the ``hub_model``
layout); with none set, the repository's ``hub_model/``. Hub files go through ``huggingface_hub``'s
``snapshot_download`` and its cache (``HF_HOME``, ``HF_TOKEN``, ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``
work as usual); added here are a retried metadata request that tells "Hub down" from "no such
repo, revision or file", and a check of every file against the Hub's checksum (``hub.cache``). Hub down: the
cached copy is served with one warning; otherwise every fault is a ``ModelSourceError``, one line
naming the repo, the revision and the endpoint.

Example:
    >>> source = resolve_model_source(Settings(model_dir=Path("hub_model")))
    >>> source.description
    'local folder /.../hub_model'
    >>> source.path("model.keras")
    PosixPath('/.../hub_model/model.keras')
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download, try_to_load_from_cache
from huggingface_hub.errors import (HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled,
                                    RepositoryNotFoundError, RevisionNotFoundError, RevisionResolutionError)

from imageclf.errors import ModelError, first_line
from imageclf.hub.cache import cached_checksums, checksum_problem, forget_commit
from imageclf.model.blocks import RUNTIME_FILES
from imageclf.settings import SETTINGS, Settings

REQUIRED_FILES: tuple[str, ...] = ("model.keras", "labels.json", "config.json")
# feature_ood.npz and the optimised runtime's files: named (and sha256-pinned) by config.json.
OPTIONAL_FILES: tuple[str, ...] = ("metrics.json", "README.md", "feature_ood.npz", *RUNTIME_FILES)
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[3] / "hub_model"   # src/imageclf/hub/ -> the repo

_MODEL_FILES = list(REQUIRED_FILES + OPTIONAL_FILES)
_COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
log = logging.getLogger(__name__)


class ModelSourceError(ModelError, RuntimeError):
    """The model folder cannot be resolved; the message is one line meant for people."""

@dataclass(frozen=True)
class ModelSource:
    """A resolved model folder and where it came from.

    ``revision`` is what was asked for (``None`` for local folders); ``commit`` is the Hub
    commit sha the files really come from, which differs when a branch or tag was asked for.
    """

    folder: Path
    files: dict[str, Path] = field(default_factory=dict)
    repo_id: str | None = None
    revision: str | None = None
    commit: str | None = None

    @property
    def is_local(self) -> bool:
        return self.repo_id is None

    @property
    def description(self) -> str:
        """Where the model comes from, in words, e.g. ``"Hub repo a/b @ 0123456789ab"``."""
        if self.is_local:
            return f"local folder {self.folder}"
        pinned = self.commit or self.revision or "main"
        return f"Hub repo {self.repo_id} @ {pinned[:12]}"

    def path(self, name: str) -> Path | None:
        """Path of one model file, or ``None`` for an optional file the source lacks."""
        return self.files.get(name)


def resolve_model_source(
    settings: Settings | None = None,
    *,
    default_dir: Path = DEFAULT_MODEL_DIR,
    cache_dir: str | os.PathLike | None = None,
) -> ModelSource:
    """Resolve the model folder from the settings' ``model_repo``/``model_revision`` or ``model_dir``.

    Example:
        >>> resolve_model_source(Settings(model_repo="a/b", model_revision="0" * 40)).folder
        PosixPath('~/.cache/huggingface/hub/models--a--b/snapshots/0000...')

    Raises:
        ModelSourceError: conflicting settings, missing files, or a failed download.
    """
    settings = SETTINGS if settings is None else settings
    repo_id, revision, model_dir = settings.model_repo, settings.model_revision, settings.model_dir
    if repo_id and model_dir:
        raise ModelSourceError(
            f"Both MODEL_REPO ({repo_id}) and MODEL_DIR ({model_dir}) are set; set only one."
        )
    if revision and not repo_id:
        raise ModelSourceError(f"MODEL_REVISION ({revision}) is set but MODEL_REPO is not.")
    if repo_id:
        return download_hub_model(repo_id, revision=revision, cache_dir=cache_dir)
    return local_model(model_dir or default_dir)


def local_model(folder: str | os.PathLike) -> ModelSource:
    """Use a local ``hub_model``-style folder.

    Example:
        >>> local_model("hub_model").files["config.json"]
        PosixPath('/.../hub_model/config.json')
    """
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise ModelSourceError(f"Model folder not found: {folder} (set MODEL_DIR or MODEL_REPO).")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise ModelSourceError(f"Model folder {folder} lacks {', '.join(missing)}.")
    present = [name for name in _MODEL_FILES if (folder / name).is_file()]
    return ModelSource(folder=folder, files={name: folder / name for name in present})


def download_hub_model(
    repo_id: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    attempts: int = 3,
    retry_wait: float = 1.0,
) -> ModelSource:
    """Download (or reuse from the Hub cache) the model files of one repo revision.

    A pinned commit whose files are all cached and intact needs no network. Otherwise one request
    asks the Hub which commit the revision is and each file's checksum (``attempts`` tries, waiting
    ``retry_wait`` s, then twice that); ``snapshot_download`` fetches that exact commit, so a push
    meanwhile cannot mix two model versions. Hub unreachable: the cached copy is served with one
    warning; nothing cached: an error.

    Example:
        >>> download_hub_model("someone/some-model", revision="0123...cdef").commit
        '0123...cdef'

    Raises:
        ModelSourceError: one line naming the repo, the revision and the endpoint.
    """
    if revision is None:
        log.warning("MODEL_REVISION is not set; serving the moving 'main' branch of %s.", repo_id)
    asked = revision or "main"
    where = f"Hub repo {repo_id} at revision {asked} (endpoint {constants.ENDPOINT})"
    pinned = bool(_COMMIT_SHA.fullmatch(asked))
    if pinned:  # a commit never changes, so an intact cached copy is the answer
        cached = _cached_files(repo_id, asked, cache_dir=cache_dir)
        if cached is not None:
            log.info("Model files of %s found in the Hub cache; no download needed.", where)
            return _source(repo_id, asked, cached)
    try:
        commit, checksums = _ask_hub(repo_id, asked, where=where, attempts=attempts, retry_wait=retry_wait)
    except _HubUnreachable as err:
        # A pinned sha was looked up (and checked) above; only a branch or tag needs the cache now.
        cached = None if pinned else _cached_files(repo_id, asked, cache_dir=cache_dir)
        if cached is None:
            raise ModelSourceError(f"Cannot reach the Hub to get {where}: {err}; "
                                   "no intact copy is cached, so there is no model to serve.") from None
        source = _source(repo_id, asked, cached)
        log.warning("Cannot reach the Hub (%s); serving the cached copy of %s, commit %s, "
                    "which may be out of date.", err, where, source.commit)
        return source
    missing = [name for name in REQUIRED_FILES if name not in checksums]
    if missing:
        raise ModelSourceError(f"{where} has no {', '.join(missing)} (commit {commit[:12]}); a model repo "
                               f"needs {', '.join(REQUIRED_FILES)}.")
    files = _download(repo_id, commit, checksums, where=where, cache_dir=cache_dir)
    if not pinned:  # now that the copy is complete and intact, the Hub-down fallback may use it
        _remember_revision(repo_id, asked, commit, cache_dir=cache_dir)
    return _source(repo_id, asked, files)


class _HubUnreachable(Exception):
    """No answer from the Hub (network, DNS, timeout, 5xx, offline mode); the text says why."""

def _source(repo_id: str, asked: str, files: dict[str, Path]) -> ModelSource:
    # .../snapshots/<commit sha>/, spelled one way whether it came from a download or the cache
    folder = Path(os.path.realpath(files["config.json"].parent))
    files = {name: folder / path.name for name, path in files.items()}
    commit = folder.name if _COMMIT_SHA.fullmatch(folder.name) else None
    return ModelSource(folder=folder, files=files, repo_id=repo_id, revision=asked, commit=commit)


def _ask_hub(repo_id: str, revision: str, *, where: str, attempts: int, retry_wait: float
             ) -> tuple[str, dict[str, str]]:
    """The commit ``revision`` points to now, and the Hub's checksum of each model file there.

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
                         for s in (info.siblings or []) if s.rfilename in _MODEL_FILES}
            return str(info.sha), checksums
        except RevisionNotFoundError:
            raise ModelSourceError(f"Cannot get {where}: that revision does not exist.") from None
        except RepositoryNotFoundError:
            raise ModelSourceError(f"Cannot get {where}: the repo does not exist, or it is private "
                                   "and HF_TOKEN is missing or has no access.") from None
        except OfflineModeIsEnabled:
            raise _HubUnreachable("HF_HUB_OFFLINE is set") from None
        except HfHubHTTPError as err:
            status = err.response.status_code if err.response is not None else 0
            if status < 500 and status != 429:
                why = {401: "the Hub rejected the token (check HF_TOKEN)",
                       403: "the token has no access to this repo"}.get(status, "the Hub refused")
                raise ModelSourceError(f"Cannot get {where}: {why} (HTTP {status}).") from None
            reason = f"HTTP {status}"
        except (httpx2.TransportError, ConnectionError, TimeoutError) as err:
            reason = f"{type(err).__name__}: {first_line(err)}"
        log.debug("Hub metadata request %d/%d for %s failed: %s", attempt + 1, attempts, where, reason)
    raise _HubUnreachable(f"{attempts} attempt(s) failed, last: {reason}")


def _download(repo_id: str, commit: str, checksums: dict[str, str], *, where: str,
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
        elif name in OPTIONAL_FILES:
            log.info("Optional %s not used: %s", name, problem)
        else:
            forget_commit(commit, cache_dir=cache_dir)  # never leave a bad copy for the next start
            raise ModelSourceError(f"Could not download an intact {name} from {where} "
                                   f"(commit {commit[:12]}), tried twice: {problem}")
    return files


def _cached_files(repo_id: str, revision: str, *, cache_dir: str | os.PathLike | None
                  ) -> dict[str, Path] | None:
    """The revision's files from the Hub cache, without network, if every required one is there and intact.

    A branch or tag is looked up in the cache's record of what it last pointed to.
    """
    try:  # required files only: an optional one that failed to download does not spoil the copy
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=list(REQUIRED_FILES),
                                        cache_dir=cache_dir, local_files_only=True))
    except LocalEntryNotFoundError:  # not cached, or cached only in part
        return None
    files = {name: folder / name for name in _MODEL_FILES if (folder / name).is_file()}
    if not all(name in files for name in REQUIRED_FILES):
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
