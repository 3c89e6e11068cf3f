"""A local, in-memory, Hub-compatible HTTP server for tests, driven by the REAL `huggingface_hub` client.

It implements the slice of the Hub HTTP API that `create_repo`, `upload_folder` (preupload + NDJSON
commit + LFS batch/verify), `hf_hub_download`, `repo_info`, `list_repo_refs`, `list_repo_files`,
`list_repo_commits` and the Space variables calls use, with the Hub's error headers (`X-Error-Code`),
so the client raises `RepositoryNotFoundError` / `RevisionNotFoundError` / `EntryNotFoundError`.
LFS blobs are PUT to, and served from, a second loopback port standing in for the CDN: like on the
real Hub, `resolve` answers LFS files with a 302 off-origin, so the client drops its token there.

`huggingface_hub` 2.4.0 picks Xet vs LFS on the client side only (`hf_xet` installed and
`HF_HUB_DISABLE_XET` unset => Xet); no server answer can opt out. `hub_env` therefore disables Xet.

Public API: `local_hub` (pytest fixture, function scope), `LocalHub` (start/stop/restart, `endpoint`,
`token`, `storage`, `requests`), `hub_env` (env + `huggingface_hub.constants` patching), `fast_hub_retries`
and `FAKE_TOKEN`. The HTTP routes live in `tests/support/hub_routes.py`, the repo/commit model in `tests/support/hub_storage.py`.

Example:
    ```python
    >>> with LocalHub() as hub, hub_env(hub.endpoint, "/tmp/hf-home", token=hub.token):
    ...     HfApi().create_repo("alice/demo", exist_ok=True)
    ```
    or in pytest: `def test_x(local_hub): ...` (see `local_hub`).
"""

from __future__ import annotations

import contextlib
import inspect
import os
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest
from huggingface_hub import constants, hf_api
from huggingface_hub.utils import _http

from tests.support.hub_routes import HubHandler
from tests.support.hub_storage import HubStorage

FAKE_TOKEN = "hf_localTestTokenDoNotLeak0123456789"


class HubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, hub: "LocalHub", port: int, is_cdn: bool) -> None:
        super().__init__(("127.0.0.1", port), HubHandler)
        self.hub, self.is_cdn = hub, is_cdn


class LocalHub:
    """Hub API on `endpoint` + fake LFS CDN on `cdn_endpoint`, both on 127.0.0.1, sharing one `storage`.

    `stop()` makes the endpoint refuse connections; `start()` brings it back on the same ports, same data.
    `requests` logs `(is_cdn, method, path, status, had_auth_header)` for each request.
    `cdn_overrides` maps an LFS sha256 to the bytes the CDN serves instead (fault injection: a short or
    corrupted download), e.g. `hub.cdn_overrides[oid] = blob[:100]`.
    """

    def __init__(self, *, tokens: dict[str, str] | None = None) -> None:
        self.storage = HubStorage()
        self.token = FAKE_TOKEN
        self.tokens = tokens if tokens is not None else {FAKE_TOKEN: "testuser"}
        self.requests: list[tuple[bool, str, str, int, bool]] = []
        self.errors: list[Exception] = []
        self.cdn_overrides: dict[str, bytes] = {}
        self.hf_home: Path | None = None  # set by the `local_hub` fixture
        self.env: dict[str, str] = {}  # env overrides for subprocesses, set by the `local_hub` fixture
        self._servers: list[HubHTTPServer] = []
        self._ports = (0, 0)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._ports[0]}"

    @property
    def cdn_endpoint(self) -> str:
        return f"http://127.0.0.1:{self._ports[1]}"

    @property
    def is_running(self) -> bool:
        return bool(self._servers)

    def start(self) -> "LocalHub":
        if not self._servers:
            self._servers = [HubHTTPServer(self, port, is_cdn) for port, is_cdn in zip(self._ports, (False, True))]
            self._ports = tuple(s.server_address[1] for s in self._servers)  # type: ignore[assignment]
            for server in self._servers:
                threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True, name="local-hub").start()
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers = []

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> "LocalHub":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def hub_env(endpoint: str, cache_dir: str | Path, *, token: str | None = FAKE_TOKEN) -> Iterator[dict[str, str]]:
    """Point `huggingface_hub` (this process and, via the yielded env, subprocesses) at `endpoint`.

    Sets `HF_ENDPOINT`, `HF_HOME`/`HF_HUB_CACHE` (under `cache_dir`), `HF_TOKEN`, and disables telemetry
    and Xet. `huggingface_hub` copies these env vars into `huggingface_hub.constants` at import time (and the
    module-level `HfApi` behind `huggingface_hub.upload_folder` & co. keeps its endpoint), so those are patched
    too and restored on exit. Yields the env overrides (merge them into a subprocess env).
    """

    home = Path(cache_dir)
    env = {"HF_ENDPOINT": endpoint, "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"),
           "HF_XET_CACHE": str(home / "xet"), "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1",
           "HF_HUB_OFFLINE": "0", **({"HF_TOKEN": token} if token else {})}
    # hf_hub_url() formats HUGGINGFACE_CO_URL_TEMPLATE, so it must follow ENDPOINT
    consts = {"ENDPOINT": endpoint,
              "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
              "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"), "HF_XET_CACHE": str(home / "xet"),
              "HF_TOKEN_PATH": str(home / "token"), "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
              "HF_HUB_DISABLE_TELEMETRY": True, "HF_HUB_DISABLE_XET": True, "HF_HUB_OFFLINE": False}
    saved_env = {k: os.environ.get(k) for k in [*env, "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"]}
    saved_consts = {k: getattr(constants, k) for k in consts}
    saved_api_endpoint = hf_api.api.endpoint
    os.environ.pop("HUGGING_FACE_HUB_TOKEN", None)
    if token is None:
        os.environ.pop("HF_TOKEN", None)
    os.environ.update(env)
    for key, value in consts.items():
        setattr(constants, key, value)
    hf_api.api.endpoint = endpoint
    try:
        yield env
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for key, value in saved_consts.items():
            setattr(constants, key, value)
        hf_api.api.endpoint = saved_api_endpoint


@contextlib.contextmanager
def fast_hub_retries(base_wait: float = 0.01, max_wait: float = 0.02) -> Iterator[None]:
    """Shrink the client's retry back-off (1, 2, 4, 8, 8 s by default) for "Hub down" tests.

    `hf_hub_download` of a file missing from the cache retries a refused connection 5 times (~23 s);
    this keeps the retries (same code path) but makes them wait milliseconds. No env var controls it.
    """

    functions = (_http.http_backoff, inspect.unwrap(_http.http_stream_backoff))  # the latter: @contextmanager
    saved = [dict(f.__kwdefaults__) for f in functions]
    for f in functions:
        f.__kwdefaults__.update(base_wait_time=base_wait, max_wait_time=max_wait)
    try:
        yield
    finally:
        for f, defaults in zip(functions, saved):
            f.__kwdefaults__.clear()
            f.__kwdefaults__.update(defaults)


@pytest.fixture
def local_hub(tmp_path: Path) -> Iterator[LocalHub]:
    """A fresh `LocalHub` with `hub_env` applied (cache in `tmp_path/hf_home`, token `local_hub.token`).

    Extra attributes: `hf_home` (Path) and `env` (dict to merge into a subprocess environment).
    """
    with LocalHub() as hub, hub_env(hub.endpoint, tmp_path / "hf_home", token=hub.token) as env:
        hub.hf_home, hub.env = tmp_path / "hf_home", env
        yield hub
