"""Deploy the Gradio Space (default `space/`) and pin it to one exact model commit.

How the pin works: the Space code never hard-codes a model version. This script sets two Space
*variables*, `MODEL_REPO` and `MODEL_REVISION`, which the Hub exposes to the running Space as environment
variables; the app downloads the model with `snapshot_download(MODEL_REPO, revision=MODEL_REVISION)`.
`MODEL_REVISION` is a full 40-hex commit sha (printed by `scripts/release/push_model.py`), so pushing a new model
never changes what the Space serves until it is redeployed with the new sha. A branch or tag name moves
with later pushes, so it is refused unless `allow_branch=True` (`--allow-branch`), and then warned about.

The Space's README.md is uploaded with `models: [<model repo>]` in its YAML header (written into the
uploaded copy; `space_dir` itself is not changed), so the Hub links the Space to the model it serves.

The model repo should be public; for a private one, add an `HF_TOKEN` *secret* to the Space yourself
(this script never copies your token anywhere).

Example:
    ```bash
    $ SHA=$(.venv/bin/python -m scripts.release.push_model --repo-id alice/lung-histology)
    $ .venv/bin/python -m scripts.release.deploy_space --space-id alice/lung-histology-demo \\
          --model-repo alice/lung-histology --model-revision "$SHA"
    ```
    ```python
    >>> from scripts.release.deploy_space import deploy_space
    >>> deploy_space(space_id="alice/lung-demo", model_repo="alice/lung-histology", model_revision=sha)
    ```
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import yaml
from huggingface_hub import HfApi, SpaceCard
from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

from imageclf.errors import first_line
from scripts.release.push_model import (IGNORE_PATTERNS, HubAuthError, HubPushError, HubUnreachableError,
                                        MissingFilesError, check_folder, hub_errors, resolve_endpoint, resolve_token)

__all__ = ["deploy_space", "stage_bundle", "check_revision", "space_readme", "UnpinnedRevisionError", "UnpinnedRevisionWarning",
           "ModelRevisionNotFoundError", "MissingFilesError", "HubUnreachableError", "HubAuthError"]

COMMIT_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
SPACE_REQUIRED_FILES = ("app.py",)  # the Hub's Gradio runner starts `app_file`, app.py by default
# The shared package lives in src/ (training and scripts use it too); the Space imports it as
# `imageclf` from beside app.py, so the bundle carries a copy and runs from its own files alone.
PACKAGE_DIR = Path(__file__).resolve().parents[2] / "src" / "imageclf"


class UnpinnedRevisionError(HubPushError, ValueError):
    """`model_revision` is a branch/tag name (or a short sha) while a full commit sha is required."""

class ModelRevisionNotFoundError(HubPushError):
    """The model repo or the revision to pin does not exist on the Hub."""

class UnpinnedRevisionWarning(UserWarning):
    """The Space follows a moving branch/tag of the model repo (`allow_branch=True`)."""

def check_revision(model_revision: str, *, allow_branch: bool = False) -> str:
    """Return `model_revision` if it is a full commit sha; a branch/tag only with `allow_branch` (warned).

    Example:
        ```python
        >>> check_revision("main")
        Traceback (most recent call last):
        UnpinnedRevisionError: ...
        ```
    """
    if COMMIT_SHA_RE.match(model_revision):
        return model_revision
    if not allow_branch:
        raise UnpinnedRevisionError(
            f"model revision {model_revision!r} is not a full 40-character commit sha; pin the Space to the sha "
            "printed by scripts.release.push_model, or pass --allow-branch to follow a moving branch/tag"
        )
    warnings.warn(
        f"the Space will follow the moving revision {model_revision!r}: every push to it changes the served model",
        UnpinnedRevisionWarning,
        stacklevel=2,
    )
    return model_revision


def space_readme(text: str | None, *, model_repo: str, space_id: str) -> str:
    """The Space README with `models: [model_repo]` in its YAML header; other keys and the body kept.

    Without a README (`text` None or without a header) a minimal Gradio header is written.

    Example:
        ```python
        >>> print(space_readme("---\\nsdk: gradio\\n---\\n# Demo\\n", model_repo="alice/m", space_id="alice/d"))
        ---
        sdk: gradio
        models:
        - alice/m
        ---
        # Demo
        ```
    """

    try:  # huggingface_hub's own parser and writer of README YAML headers
        card = SpaceCard(text or "")
    except (yaml.YAMLError, ValueError) as exc:
        raise ValueError(f"the Space README's YAML header cannot be read: {exc}") from None
    if not card.data.to_dict():
        card.data.title, card.data.sdk, card.data.app_file = space_id.split("/")[-1], "gradio", "app.py"
    card.data.models = [model_repo]
    return str(card)


EXAMPLE_SLIDE_NOTE = ("# Example slide\n\n`{name}`: shown by the Slide tab's example button. Its licence must allow "
                      "shipping it; the project uses `CMU-1-Small-Region.svs` (OpenSlide test data, Carnegie Mellon "
                      "University, CC0 1.0; skin, so the lung model refuses it, and the Space says so).\n")


def stage_bundle(space_dir: Path, out: Path, *, example_slide: Path | None = None) -> Path:
    """The Space as uploaded: `space_dir` plus the shared package beside `app.py` (no caches), and
    `example_slide` (if given) in `example_slides/`, where the Slide tab looks for its example."""
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(space_dir, out, ignore=skip)
    shutil.copytree(PACKAGE_DIR, out / "imageclf", ignore=skip)
    if example_slide is not None:
        (out / "example_slides").mkdir(exist_ok=True)
        shutil.copyfile(example_slide, out / "example_slides" / Path(example_slide).name)
        (out / "example_slides" / "README.md").write_text(EXAMPLE_SLIDE_NOTE.format(name=Path(example_slide).name))
    return out


def deploy_space(
    *,
    space_id: str,
    model_repo: str,
    model_revision: str,
    space_dir: str | Path = "space",
    token: str | None = None,
    endpoint: str | None = None,
    allow_branch: bool = False,
    private: bool = False,
    check_model: bool = True,
    example_slide: str | Path | None = None,
) -> str:
    """Create/update the Gradio Space `space_id` from `space_dir`, pinned to `model_repo@model_revision`.

    Args:
        space_id: `"user/name"` of the Space.
        model_repo: model repo the Space serves (`MODEL_REPO` variable).
        model_revision: full commit sha to serve (`MODEL_REVISION` variable).
        space_dir: folder uploaded as the Space (needs `app.py`); caches like `__pycache__` are skipped.
            The shared package (`src/imageclf`) is copied beside `app.py` in the uploaded bundle.
        token: Hub token; defaults to `HF_TOKEN` or the saved login. Never printed.
        endpoint: Hub URL; defaults to `HF_ENDPOINT` or https://huggingface.co.
        allow_branch: accept a branch/tag name as `model_revision` (warns with `UnpinnedRevisionWarning`).
        private: create the Space private (no effect on an existing Space).
        check_model: first verify that `model_repo@model_revision` exists, so a typo cannot break the Space.
        example_slide: a whole-slide image shipped as the Slide tab's example (its licence must allow it:
            e.g. the CC0 `CMU-1-Small-Region.svs`).

    Returns:
        The full 40-hex sha of the Space commit.

    Raises:
        UnpinnedRevisionError, ModelRevisionNotFoundError, MissingFilesError, HubUnreachableError, HubAuthError;
        ValueError when the Space README's YAML header cannot be read.

    Example:
        ```python
        >>> deploy_space(space_id="alice/lung-demo", model_repo="alice/lung-histology",
        ...              model_revision="3f1c0a5e9b7d2c4e6f8a0b1c2d3e4f5a6b7c8d9e")
        'b0e1d2c3...'
        ```
    """

    revision = check_revision(model_revision, allow_branch=allow_branch)
    folder = check_folder(space_dir, SPACE_REQUIRED_FILES)
    readme_file = folder / "README.md"
    readme = space_readme(readme_file.read_text(encoding="utf-8") if readme_file.is_file() else None,
                          model_repo=model_repo, space_id=space_id)  # before any request: a bad header stops here
    endpoint, token = resolve_endpoint(endpoint), resolve_token(token)
    api = HfApi(endpoint=endpoint, token=token)
    with hub_errors(endpoint, token):
        if check_model:
            try:
                api.model_info(model_repo, revision=revision)
            except (RepositoryNotFoundError, RevisionNotFoundError):
                raise ModelRevisionNotFoundError(
                    f"model {model_repo}@{revision} not found at {endpoint} (or not readable with this token)"
                ) from None
        api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:  # a copy, so the README can carry `models:`
            staged = Path(tmp) / "space"
            stage_bundle(folder, staged, example_slide=None if example_slide is None else Path(example_slide))
            (staged / "README.md").write_text(readme, encoding="utf-8")
            info = api.upload_folder(repo_id=space_id, folder_path=staged, repo_type="space",
                                     commit_message=f"Deploy Space pinned to {model_repo}@{revision}",
                                     ignore_patterns=list(IGNORE_PATTERNS))
        # Variables last: setting them restarts the Space, which then runs the new code with the new pin.
        api.add_space_variable(space_id, "MODEL_REPO", model_repo, description="Model repo served by the Space")
        api.add_space_variable(space_id, "MODEL_REVISION", revision, description="Pinned model commit sha")
    return info.oid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.release.deploy_space", description=__doc__.split("\n")[0])
    parser.add_argument("--space-id", required=True, help="Space repo, e.g. alice/lung-histology-demo")
    parser.add_argument("--model-repo", required=True, help="model repo the Space serves")
    parser.add_argument("--model-revision", required=True, help="full 40-char commit sha from scripts.release.push_model")
    parser.add_argument("--space-dir", default="space", help="folder uploaded as the Space (default: space)")
    parser.add_argument("--allow-branch", action="store_true", help="accept a moving branch/tag as revision")
    parser.add_argument("--private", action="store_true", help="create the Space private")
    parser.add_argument("--endpoint", default=None, help="Hub URL (default: HF_ENDPOINT or huggingface.co)")
    parser.add_argument("--example-slide", type=Path, default=None,
                        help="a slide shipped as the Slide tab's example (licence must allow it: the CC0 CMU slide)")
    args = parser.parse_args(argv)
    try:
        sha = deploy_space(space_id=args.space_id, model_repo=args.model_repo, model_revision=args.model_revision,
                           space_dir=args.space_dir, endpoint=args.endpoint, allow_branch=args.allow_branch,
                           private=args.private, example_slide=args.example_slide)
    except (HubPushError, ValueError) as exc:  # ValueError: invalid repo id
        raise SystemExit(f"deploy_space: error: {first_line(exc)}") from None
    print(f"deployed {args.space_dir} to Space {args.space_id} at commit {sha}, "
          f"serving {args.model_repo}@{args.model_revision}", file=sys.stderr)
    print(sha)  # alone on stdout
    return 0


if __name__ == "__main__":
    sys.exit(main())
