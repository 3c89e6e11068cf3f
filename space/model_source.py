"""Where the Space gets its model folder from: the Hugging Face Hub or a local folder.

Environment variables (read once at start-up):

- ``MODEL_REPO``: Hub model repo id, e.g. ``"someone/some-model"``.
- ``MODEL_REVISION``: branch, tag or (in deployments) the 40-character commit sha to pin.
- ``MODEL_DIR``: a local folder in the ``hub_model`` layout instead of the Hub.

With neither ``MODEL_REPO`` nor ``MODEL_DIR`` set, the project's ``hub_model/`` folder next to
``space/`` is used. Hub files go through the normal Hub cache (``HF_HOME`` / ``HF_HUB_CACHE``),
so a restart with a pinned commit does not download again, and ``HF_TOKEN`` / ``HF_ENDPOINT``
work as usual.

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

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
) -> ModelSource:
    """Download (or reuse from the Hub cache) the model files of one repo revision.

    The first file fixes the commit; the others are fetched at that exact commit, so a push
    to a branch between two downloads cannot mix files from two model versions.

    Example:
        >>> download_hub_model("someone/some-model", revision="0123...cdef").commit
        '0123...cdef'
    """
    # Imported here so local-folder use (tests, training scripts) does not need the Hub client.
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

    if revision is None:
        log.warning("MODEL_REVISION is not set; serving the moving 'main' branch of %s.", repo_id)
    asked = revision or "main"
    commit = asked if _COMMIT_SHA.fullmatch(asked) else None
    files: dict[str, Path] = {}
    used_network = False

    def fetch(name: str, *, cache_only: bool = False) -> Path:
        nonlocal used_network
        rev = commit or asked
        if commit is not None:  # a pinned commit already in the cache needs no network at all
            try:
                return Path(hf_hub_download(repo_id, name, revision=rev, cache_dir=cache_dir,
                                            local_files_only=True))
            except EntryNotFoundError:
                if cache_only:
                    raise
        used_network = True
        return Path(hf_hub_download(repo_id, name, revision=rev, cache_dir=cache_dir))

    for name in REQUIRED_FILES:
        try:
            files[name] = fetch(name)
        except Exception as err:  # any Hub/network failure becomes one clear line
            raise ModelSourceError(
                f"Could not get {name} from Hub repo {repo_id} at revision {asked} "
                f"(endpoint {constants.ENDPOINT}): {_first_line(err)}"
            ) from err
        if commit is None:
            # Cache layout: .../snapshots/<commit sha>/<file>; pin the rest to that commit.
            candidate = files[name].parent.name
            commit = candidate if _COMMIT_SHA.fullmatch(candidate) else None
    for name in OPTIONAL_FILES:
        # Required files all cached => this commit was fetched before, and so were its optional
        # files if they exist; asking the Hub again would only stall a start-up when it is down.
        try:
            files[name] = fetch(name, cache_only=not used_network)
        except (EntryNotFoundError, HfHubHTTPError, OSError) as err:
            log.info("Optional %s not available from %s: %s", name, repo_id, _first_line(err))
    folder = files["config.json"].parent
    return ModelSource(folder=folder, files=files, repo_id=repo_id, revision=asked, commit=commit)


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]
