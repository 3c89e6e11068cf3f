"""Where the model folder comes from: a Hugging Face Hub repo pinned to a commit, or a local folder.

Settings (``imageclf.settings``): ``MODEL_REPO`` (a Hub repo id), ``MODEL_REVISION`` (branch, tag
or, in deployments, the commit sha to pin) or ``MODEL_DIR`` (a local folder in the ``hub_model``
layout); with none set, the repository's ``hub_model/``. This module decides which, names the files
a model folder has, and returns a :class:`ModelSource`; getting a Hub revision's files (retries,
checksums, the cache when the Hub is down) is ``hub.download``'s job. Every fault is a
``ModelSourceError``, one line (for the Hub: naming the repo, the revision and the endpoint).

Example:
    >>> source = resolve_model_source(Settings(model_dir=Path("hub_model")))
    >>> source.description
    'local folder /.../hub_model'
    >>> source.path("model.keras")
    PosixPath('/.../hub_model/model.keras')
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from imageclf.errors import ModelError
from imageclf.hub.download import HubDownloadError, download_revision
from imageclf.model.config_blocks import RUNTIME_FILES
from imageclf.settings import SETTINGS, Settings

REQUIRED_FILES: tuple[str, ...] = ("model.keras", "labels.json", "config.json")
# feature_ood.npz, tissue_gate.npz and the optimised runtime's files: named (and sha256-pinned) by config.json.
OPTIONAL_FILES: tuple[str, ...] = ("metrics.json", "README.md", "feature_ood.npz", "tissue_gate.npz", *RUNTIME_FILES)
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[3] / "hub_model"   # src/imageclf/hub/ -> the repo

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
        return hub_model(repo_id, revision=revision, cache_dir=cache_dir)
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
    present = [name for name in REQUIRED_FILES + OPTIONAL_FILES if (folder / name).is_file()]
    return ModelSource(folder=folder, files={name: folder / name for name in present})


def hub_model(
    repo_id: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    attempts: int = 3,
    retry_wait: float = 1.0,
) -> ModelSource:
    """The model files of one Hub repo revision (``None``: the moving ``main`` branch, with a warning).

    ``attempts`` and ``retry_wait``: the metadata request's tries and first wait (``hub.download``).

    Example:
        >>> hub_model("someone/some-model", revision="0123...cdef").commit
        '0123...cdef'

    Raises:
        ModelSourceError: one line naming the repo, the revision and the endpoint.
    """
    if revision is None:
        log.warning("MODEL_REVISION is not set; serving the moving 'main' branch of %s.", repo_id)
    asked = revision or "main"
    try:
        copy = download_revision(repo_id, revision=asked, required=REQUIRED_FILES, optional=OPTIONAL_FILES,
                                 cache_dir=cache_dir, attempts=attempts, retry_wait=retry_wait)
    except HubDownloadError as err:  # callers of the source catch one error type, whatever went wrong
        raise ModelSourceError(str(err)) from None
    return ModelSource(folder=copy.folder, files=copy.files, repo_id=repo_id, revision=asked, commit=copy.commit)
