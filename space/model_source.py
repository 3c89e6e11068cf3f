"""Where the Space gets its model folder from: the Hugging Face Hub or a local folder.

Environment variables (read once at start-up):

- ``MODEL_REPO``: Hub model repo id, e.g. ``"someone/some-model"``.
- ``MODEL_REVISION``: branch, tag or (in deployments) the 40-character commit sha to pin.
- ``MODEL_DIR``: a local folder in the ``hub_model`` layout instead of the Hub.

With neither ``MODEL_REPO`` nor ``MODEL_DIR`` set, the project's ``hub_model/`` folder next to
``space/`` is used. Hub files go through the normal Hub cache (``HF_HOME`` / ``HF_HUB_CACHE``),
so a restart with a pinned commit does not download again, and ``HF_TOKEN`` / ``HF_ENDPOINT``
work as usual.

Hub faults: unreachable Hub with the revision cached -> served from the cache with one
warning; nothing cached, unknown repo/revision, a required file missing, or a download that
stays short or damaged after one retry -> ``ModelSourceError``, one line naming the repo,
the revision and the endpoint. Every file is checked against the Hub's checksum.

Example:
    >>> source = resolve_model_source({"MODEL_DIR": "hub_model"})
    >>> source.description
    'local folder /.../hub_model'
    >>> source.path("model.keras")
    PosixPath('/.../hub_model/model.keras')
"""
from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hub_cache import checksum_problem, remember_ref

REQUIRED_FILES: tuple[str, ...] = ("model.keras", "labels.json", "config.json")
OPTIONAL_FILES: tuple[str, ...] = ("metrics.json", "README.md")
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "hub_model"

_COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
log = logging.getLogger(__name__)


class ModelSourceError(RuntimeError):
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
    env: Mapping[str, str] | None = None,
    *,
    default_dir: Path = DEFAULT_MODEL_DIR,
    cache_dir: str | os.PathLike | None = None,
) -> ModelSource:
    """Resolve the model folder from ``MODEL_REPO``/``MODEL_REVISION`` or ``MODEL_DIR``.

    Example:
        >>> resolve_model_source({"MODEL_REPO": "a/b", "MODEL_REVISION": "0" * 40}).folder
        PosixPath('~/.cache/huggingface/hub/models--a--b/snapshots/0000...')

    Raises:
        ModelSourceError: conflicting settings, missing files, or a failed download.
    """
    env = os.environ if env is None else env
    repo_id = (env.get("MODEL_REPO") or "").strip()
    revision = (env.get("MODEL_REVISION") or "").strip() or None
    model_dir = (env.get("MODEL_DIR") or "").strip()
    if repo_id and model_dir:
        raise ModelSourceError(
            f"Both MODEL_REPO ({repo_id}) and MODEL_DIR ({model_dir}) are set; set only one."
        )
    if revision and not repo_id:
        raise ModelSourceError(f"MODEL_REVISION ({revision}) is set but MODEL_REPO is not.")
    if repo_id:
        return download_hub_model(repo_id, revision=revision, cache_dir=cache_dir)
    return local_model(Path(model_dir) if model_dir else default_dir)


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
    present = [name for name in REQUIRED_FILES + OPTIONAL_FILES if (folder / name).is_file()]
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

    A pinned commit whose files are all cached needs no network at all. Otherwise one
    request asks the Hub which commit the revision is (``attempts`` tries, waiting
    ``retry_wait`` s, then twice that), and every file is fetched at that exact commit, so
    a push between two downloads cannot mix two model versions. Hub unreachable: the
    cached copy of the revision is served with one warning; nothing cached: an error.
    Every file is checked against the checksum the Hub gave for it (its cache blob name)
    and downloaded once more if it does not match.

    Example:
        >>> download_hub_model("someone/some-model", revision="0123...cdef").commit
        '0123...cdef'

    Raises:
        ModelSourceError: one line naming the repo, the revision and the endpoint.
    """
    from huggingface_hub import constants

    if revision is None:
        log.warning("MODEL_REVISION is not set; serving the moving 'main' branch of %s.", repo_id)
    asked = revision or "main"
    where = f"Hub repo {repo_id} at revision {asked} (endpoint {constants.ENDPOINT})"
    if _COMMIT_SHA.fullmatch(asked):
        cached = _cached_files(repo_id, asked, cache_dir=cache_dir)
        if cached is not None:
            log.info("Model files of %s found in the Hub cache; no download needed.", where)
            return _source(repo_id, asked, cached)
    try:
        commit = _resolve_commit(repo_id, asked, where=where, attempts=attempts, retry_wait=retry_wait)
    except _HubUnreachable as err:
        # A pinned sha was looked up (and hashed) above; only a branch needs the cache now.
        cached = None if _COMMIT_SHA.fullmatch(asked) else _cached_files(repo_id, asked, cache_dir=cache_dir)
        if cached is None:
            raise ModelSourceError(f"Cannot reach the Hub to get {where}: {err}; "
                                   "no intact copy is cached, so there is no model to serve.") from None
        source = _source(repo_id, asked, cached)
        log.warning("Cannot reach the Hub (%s); serving the cached copy of %s, commit %s, "
                    "which may be out of date.", err, where, source.commit)
        return source
    files = {name: _download(repo_id, name, commit, where=where, cache_dir=cache_dir)
             for name in REQUIRED_FILES}
    if asked != commit:  # only now that the snapshot is complete: the cache fallback uses it
        remember_ref(repo_id, asked, commit, cache_dir=cache_dir)
    for name in OPTIONAL_FILES:
        try:
            files[name] = _download(repo_id, name, commit, where=where, cache_dir=cache_dir)
        except ModelSourceError as err:
            log.info("Optional %s not used: %s", name, err)
    return _source(repo_id, asked, files)


class _HubUnreachable(Exception):
    """No answer from the Hub (network, DNS, timeout, 5xx, offline mode); the text says why."""


def _source(repo_id: str, asked: str, files: dict[str, Path]) -> ModelSource:
    folder = files["config.json"].parent  # .../snapshots/<commit sha>/
    commit = folder.name if _COMMIT_SHA.fullmatch(folder.name) else None
    return ModelSource(folder=folder, files=files, repo_id=repo_id, revision=asked, commit=commit)


def _cached_files(repo_id: str, revision: str, *, cache_dir: str | os.PathLike | None
                  ) -> dict[str, Path] | None:
    """The revision's files from the Hub cache if every required one is there and intact."""
    from huggingface_hub import hf_hub_download

    files: dict[str, Path] = {}
    for name in REQUIRED_FILES + OPTIONAL_FILES:
        try:
            path = Path(hf_hub_download(repo_id, name, revision=revision, cache_dir=cache_dir,
                                        local_files_only=True))
        except Exception:  # not cached (or cached as "does not exist")
            if name in REQUIRED_FILES:
                return None
            continue
        problem = checksum_problem(path)
        if problem:
            log.warning("Cached %s of %s@%s is damaged (%s); it will be downloaded again.",
                        name, repo_id, revision, problem)
            return None
        files[name] = path
    return files


def _resolve_commit(repo_id: str, revision: str, *, where: str, attempts: int, retry_wait: float) -> str:
    """The commit sha ``revision`` points to now, from one metadata request (retried if unanswered)."""
    import httpx2
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import (
        HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError)

    reason = "no attempt made"
    for attempt in range(max(1, attempts)):
        if attempt:
            time.sleep(retry_wait * 2 ** (attempt - 1))
        try:
            info = HfApi().model_info(repo_id, revision=revision, timeout=constants.HF_HUB_ETAG_TIMEOUT)
            return str(info.sha)
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


def _download(repo_id: str, name: str, commit: str, *, where: str,
              cache_dir: str | os.PathLike | None) -> Path:
    """One file at ``commit``, checksum-verified; a bad copy is downloaded once more."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    problem = "no attempt made"
    for force in (False, True):
        try:
            path = Path(hf_hub_download(repo_id, name, revision=commit, cache_dir=cache_dir,
                                        force_download=force))
        except EntryNotFoundError:
            raise ModelSourceError(f"{where} has no {name} (commit {commit[:12]}); a model repo "
                                   f"needs {', '.join(REQUIRED_FILES)}.") from None
        except Exception as err:  # network, HTTP or size-check failure: one line, not a traceback
            problem = first_line(err)
            log.warning("Downloading %s from %s failed: %s", name, where, problem)
            continue
        problem = checksum_problem(path)
        if not problem:
            return path
        log.warning("Downloaded %s from %s is damaged: %s", name, where, problem)
        path.resolve().unlink(missing_ok=True)  # never leave a bad copy for the next start
    raise ModelSourceError(f"Could not download an intact {name} from {where} "
                           f"(commit {commit[:12]}), tried twice: {problem}")


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when empty): one line for a person."""
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]
