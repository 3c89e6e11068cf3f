"""Example images for the Space: from ``EXAMPLES_DIR``, the model folder, or the model's Hub repo.

Looked up in this order, first hit wins:

1. ``EXAMPLES_DIR`` (environment): a local folder of images, e.g. tiles you add to the Space repo.
2. ``<model folder>/examples/`` for a local model folder (``MODEL_DIR`` or the bundled one).
3. ``examples/*`` of the Hub model repo at the pinned revision (``push_model --examples``
   uploads them there): from the Hub cache's snapshot of that commit when a previous start
   downloaded them (no network), else listed with one metadata request (no retries: examples
   are optional) and downloaded. Any Hub error logs one warning and the Space starts without
   examples.

Example:
    >>> find_examples(source)                          # source: model_source.ModelSource
    [PosixPath('/.../examples/lung_aca_1.jpeg'), PosixPath('/.../examples/lung_n_1.jpeg')]
"""
from __future__ import annotations

import logging
from pathlib import Path

from huggingface_hub import HfApi, constants, hf_hub_download

from imageclf.errors import first_line
from imageclf.core.imaging import IMAGE_SUFFIXES
from imageclf.hub.source import ModelSource

MAX_EXAMPLES = 24
EXAMPLES_FOLDER = "examples"
log = logging.getLogger(__name__)

__all__ = ["find_examples", "folder_examples", "hub_examples", "true_class"]
PICK_RULE = ("test-split images picked by a fixed rule (evenly spaced through each class's sorted list of "
             "test files, scripts/release/pick_examples.py), not by whether the model gets them right")


def find_examples(source: ModelSource, *, folder: Path | None = None, limit: int = MAX_EXAMPLES) -> list[Path]:
    """Example image files for this model (possibly none), sorted by name, at most ``limit``.

    ``folder``: the ``EXAMPLES_DIR`` setting (``imageclf.settings``), used instead when given.
    """
    if folder is not None:
        found = folder_examples(folder, limit=limit)
        if not found:
            log.warning("EXAMPLES_DIR %s has no images (%s).", folder, ", ".join(sorted(IMAGE_SUFFIXES)))
        return found
    cached = folder_examples(source.folder / EXAMPLES_FOLDER, limit=limit)  # Hub: the commit's snapshot
    if source.is_local or cached:
        return cached
    return hub_examples(str(source.repo_id), revision=source.commit or source.revision, limit=limit)


def folder_examples(folder: Path, *, limit: int = MAX_EXAMPLES) -> list[Path]:
    """Image files directly in ``folder`` (none when it does not exist).

    Example:
        >>> folder_examples(Path("hub_model/examples"))
        [PosixPath('hub_model/examples/a.jpeg')]
    """
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)[:limit]


def hub_examples(repo_id: str, *, revision: str | None, limit: int = MAX_EXAMPLES) -> list[Path]:
    """Download ``examples/*`` images of a Hub model repo at ``revision`` (Hub cache; none on error).

    Example:
        >>> hub_examples("someone/some-model", revision="0123...cdef")
        [PosixPath('~/.cache/huggingface/hub/models--someone--some-model/snapshots/0123.../examples/a.jpeg')]
    """

    try:
        # model_info is one request; list_repo_files would retry a dead Hub for ~20 s.
        info = HfApi().model_info(repo_id, revision=revision, timeout=constants.HF_HUB_ETAG_TIMEOUT)
        names = sorted(s.rfilename for s in info.siblings or []
                       if s.rfilename.startswith(f"{EXAMPLES_FOLDER}/")
                       and Path(s.rfilename).suffix.lower() in IMAGE_SUFFIXES)
        return [Path(hf_hub_download(repo_id, name, revision=revision)) for name in names[:limit]]
    except Exception as err:  # examples are optional: never let them stop the Space
        log.warning("No example images from %s at %s: %s", repo_id, revision or "main", first_line(err))
        return []


def true_class(name: str, class_ids: list[str]) -> str | None:
    """The class id an example file is named after (``<class id>_<n>.<suffix>``, as
    ``scripts/release/pick_examples.py`` writes them), else ``None``.

    Example:
        >>> true_class("lung_aca_2.jpeg", ["lung_aca", "lung_n"]), true_class("mine.png", ["lung_aca"])
        ('lung_aca', None)
    """
    stem = Path(name).stem
    matches = [cid for cid in class_ids if stem.startswith(f"{cid}_") and stem[len(cid) + 1:].isdigit()]
    return max(matches, key=len) if matches else None
