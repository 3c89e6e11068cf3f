"""Push the exported model folder (default `hub_model/`) to a Hugging Face Hub model repo.

The folder must hold `model.keras`, `labels.json`, `config.json` and `README.md` (the model card);
`metrics.json` is optional and only feeds the commit message. The printed value is the full 40-char
commit sha of the upload: pin the Space to it (`scripts/release/deploy_space.py --model-revision SHA`).

There is no `--token` option (it would end up in shell history): the token comes from the `HF_TOKEN`
environment variable or the login saved by `hf auth login`, and is never printed or logged.

Example:
    ```bash
    $ python -m scripts.release.push_model --repo-id alice/lung-histology --examples training/examples
    3f1c0a5e9b7d2c4e6f8a0b1c2d3e4f5a6b7c8d9e
    ```
    ```python
    >>> from scripts.release.push_model import push_model
    >>> sha = push_model("hub_model", repo_id="alice/lung-histology")
    ```
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Iterator, Mapping

import httpx2
from huggingface_hub import HfApi, constants, get_token
from huggingface_hub.errors import HfHubHTTPError

from imageclf.errors import ModelError, first_line

REQUIRED_FILES = ("model.keras", "labels.json", "config.json", "README.md")
EXAMPLE_PATTERNS = ["*.png", "*.jpg", "*.jpeg", "*.tif", "*.tiff", "*.bmp", "*.webp"]
# fnmatch-style, where `*` also crosses `/`: "x/*" is top level, "*/x/*" any depth
IGNORE_PATTERNS = [p for name in ("__pycache__", ".ipynb_checkpoints", ".pytest_cache")
                   for p in (f"{name}/*", f"*/{name}/*")] + ["*.pyc", ".DS_Store", "*/.DS_Store"]


class HubPushError(ModelError, RuntimeError):
    """Base class of the errors `push_model` / `deploy_space` raise with a one-line explanation."""

class HubUnreachableError(HubPushError):
    """The Hub endpoint could not be reached (network down, wrong `HF_ENDPOINT`, timeout)."""

class HubAuthError(HubPushError):
    """No token, or the Hub rejected it (invalid, or without write access to the repo)."""

class MissingFilesError(HubPushError, FileNotFoundError):
    """The folder to upload lacks files the model repo (or Space) needs."""

def resolve_endpoint(endpoint: str | None) -> str:
    """`endpoint`, else `HF_ENDPOINT` read now (the library reads it only at import), else the default Hub."""

    return (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def resolve_token(token: str | None) -> str:
    """Explicit token, else `HF_TOKEN`, else the saved login; raises `HubAuthError` when there is none."""

    token = token or get_token()
    if not token:
        raise HubAuthError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (write access needed)")
    return token


@contextlib.contextmanager
def hub_errors(endpoint: str, token: str | None = None) -> Iterator[None]:
    """Turn transport / HTTP failures from `huggingface_hub` into `HubUnreachableError` / `HubAuthError`.

    Messages are one line and have `token` masked, in case an underlying error ever echoes it.
    """

    def one_line(err: BaseException) -> str:
        text = (str(err).strip().splitlines() or [""])[0]
        return text.replace(token, "***") if token else text

    try:
        yield
    except HubPushError:
        raise
    except Exception as exc:  # the client wraps some failures (e.g. LFS uploads): walk the cause chain
        cause: BaseException | None = exc
        while cause is not None:
            # builtin ConnectionError/TimeoutError: what hf_xet raises when its endpoints are unreachable
            if isinstance(cause, (httpx2.TransportError, ConnectionError, TimeoutError)):
                raise HubUnreachableError(
                    f"cannot reach the Hub at {endpoint} ({type(cause).__name__}: {one_line(cause)})"
                ) from exc
            if isinstance(cause, HfHubHTTPError) and cause.response is not None and \
                    cause.response.status_code in (401, 403):
                raise HubAuthError(
                    f"the Hub at {endpoint} rejected the token (HTTP {cause.response.status_code}): "
                    "check HF_TOKEN / `hf auth login` and that it has write access"
                ) from exc
            cause = cause.__cause__
        raise


def check_folder(folder: str | Path, required: tuple[str, ...] = REQUIRED_FILES) -> Path:
    """Return `folder` as a Path; raise `MissingFilesError` naming every missing required file."""
    path = Path(folder)
    if not path.is_dir():
        raise MissingFilesError(f"folder {str(path)!r} does not exist")
    missing = [name for name in required if not (path / name).is_file()]
    if missing:
        raise MissingFilesError(f"folder {str(path)!r} is missing required file(s): {', '.join(missing)}")
    return path


def build_commit_message(metrics: Mapping[str, object] | None) -> str:
    """Commit title carrying the headline test metrics.

    Example:
        ```python
        >>> build_commit_message({"accuracy": 0.9531, "macro_f1": 0.951})
        'Upload model: test accuracy 0.953, macro-F1 0.951'
        >>> build_commit_message({})
        'Upload model'
        ```
    """
    parts = []
    for key, label in (("accuracy", "test accuracy"), ("macro_f1", "macro-F1")):
        value = (metrics or {}).get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            parts.append(f"{label} {value:.3f}")
    return "Upload model: " + ", ".join(parts) if parts else "Upload model"


def read_metrics(folder: Path) -> dict:
    """Top level of `folder/metrics.json`, or `{}` when it is absent or unreadable."""
    try:
        data = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def push_model(
    folder: str | Path = "hub_model",
    *,
    repo_id: str,
    token: str | None = None,
    endpoint: str | None = None,
    private: bool = False,
    commit_message: str | None = None,
    examples: str | Path | None = None,
) -> str:
    """Create (if needed) the model repo `repo_id` and upload `folder` to it; return the commit sha.

    Args:
        folder: exported model folder; must contain `model.keras`, `labels.json`, `config.json`, `README.md`.
        repo_id: `"user/name"` of the model repo.
        token: Hub token; defaults to `HF_TOKEN` or the saved login. Never printed.
        endpoint: Hub URL; defaults to `HF_ENDPOINT` or https://huggingface.co.
        private: create the repo private (no effect on an existing repo).
        commit_message: defaults to one built from `metrics.json` (accuracy, macro-F1).
        examples: optional folder of example tiles, uploaded to `examples/` in a second commit.

    Returns:
        The full 40-hex sha of the last commit, which contains the model (and the examples).

    Raises:
        MissingFilesError, HubUnreachableError, HubAuthError (all `HubPushError`).

    Example:
        ```python
        >>> push_model("hub_model", repo_id="alice/lung-histology", private=True)
        '3f1c0a5e9b7d2c4e6f8a0b1c2d3e4f5a6b7c8d9e'
        ```
    """

    path = check_folder(folder)
    if examples is not None and not Path(examples).is_dir():
        raise MissingFilesError(f"examples folder {str(examples)!r} does not exist")
    endpoint, token = resolve_endpoint(endpoint), resolve_token(token)
    api = HfApi(endpoint=endpoint, token=token)
    message = commit_message or build_commit_message(read_metrics(path))
    with hub_errors(endpoint, token):
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=path, repo_type="model",
                                 commit_message=message, ignore_patterns=list(IGNORE_PATTERNS))
        if examples is not None:
            info = api.upload_folder(repo_id=repo_id, folder_path=examples, path_in_repo="examples",
                                     repo_type="model", commit_message="Add example tiles",
                                     allow_patterns=EXAMPLE_PATTERNS + [p.upper() for p in EXAMPLE_PATTERNS])
    return info.oid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.release.push_model", description=__doc__.split("\n")[0])
    parser.add_argument("--repo-id", required=True, help="model repo, e.g. alice/lung-histology")
    parser.add_argument("--folder", default="hub_model", help="exported model folder (default: hub_model)")
    parser.add_argument("--examples", default=None, help="optional folder of example tiles -> examples/")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--endpoint", default=None, help="Hub URL (default: HF_ENDPOINT or huggingface.co)")
    parser.add_argument("--message", default=None, help="commit message (default: built from metrics.json)")
    args = parser.parse_args(argv)
    try:
        sha = push_model(args.folder, repo_id=args.repo_id, endpoint=args.endpoint, private=args.private,
                         commit_message=args.message, examples=args.examples)
    except (HubPushError, ValueError) as exc:  # ValueError: invalid repo id, invalid model card metadata
        raise SystemExit(f"push_model: error: {first_line(exc)}") from None
    print(f"pushed {args.folder} to {args.repo_id} at commit {sha}", file=sys.stderr)
    print(sha)  # alone on stdout, so `SHA=$(python -m scripts.release.push_model ...)` works
    return 0


if __name__ == "__main__":
    sys.exit(main())
