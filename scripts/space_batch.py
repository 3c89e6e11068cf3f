"""Calls of a Space's ``/predict_batch`` for the folder client: one chunk of files per call, a few at once.

gradio_client uploads every file in a request of its own, on a new connection, before a call
starts. For a folder of small tiles that cost the Space about 5 ms of CPU per file (0.6 ms with
a chunk in one request on a kept-alive connection; measured on loopback, 256 tiles), on the two
cores that also run the model. :class:`PlainHttpCalls` therefore speaks Gradio's plain HTTP API
itself: a chunk's files go up in one multipart request (``POST /gradio_api/upload``), the call is
started (``POST /gradio_api/call/predict_batch``) and its answer read from its event stream
(``GET /gradio_api/call/predict_batch/<event_id>``), with the ``gradio_client.Client``'s headers,
cookies and TLS setting (a private Space's token works the same). Calls run ``in_flight`` at a
time in threads, so the next chunks upload while the Space scores this one.

Any other client object (a wrapper of a ``Client``) is called through its ``submit``
(:class:`SubmitCalls`). Both give ``submit(paths, scale)`` -> an object whose ``result()`` is the
list of row dicts, or raises.

Example:
    >>> calls = batch_calls(connect("http://127.0.0.1:7860"), in_flight=3)
    >>> pending = calls.submit([Path("a.png"), Path("b.png")], "auto")
    >>> [row["label"] for row in pending.result()]
    ['lung_aca', 'lung_n']
    >>> calls.close()
"""
from __future__ import annotations

import contextlib
import json
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from gradio_client import Client, handle_file

from imageclf.errors import ModelError

BATCH_API_NAME = "/predict_batch"
TIMEOUT = httpx.Timeout(30.0, read=600.0)   # a chunk of large images may take minutes to score on 2 cores

__all__ = ["BATCH_API_NAME", "BatchCallError", "PlainHttpCalls", "SubmitCalls", "batch_calls", "call_answer"]


class BatchCallError(ModelError, RuntimeError):
    """The Space answered the call with an error; the message is the Space's."""


def batch_calls(client: Any, *, in_flight: int) -> PlainHttpCalls | SubmitCalls:
    """The calls for ``client``: over plain HTTP for a ``gradio_client.Client``, else through its ``submit``."""
    return PlainHttpCalls(client, in_flight=in_flight) if isinstance(client, Client) else SubmitCalls(client)


class PlainHttpCalls:
    """``/predict_batch`` over Gradio's plain HTTP API, ``in_flight`` calls at a time, one connection pool."""

    def __init__(self, client: Client, *, in_flight: int) -> None:
        self._http = httpx.Client(headers=client.headers, cookies=client.cookies, verify=client.ssl_verify,
                                  timeout=TIMEOUT, limits=httpx.Limits(max_connections=max(in_flight, 1) * 2))
        self._upload_url = client.upload_url
        self._call_url = urllib.parse.urljoin(client.src_prefixed, "call" + BATCH_API_NAME)
        self._pool = ThreadPoolExecutor(max_workers=max(in_flight, 1), thread_name_prefix="batch-call")

    def submit(self, paths: Sequence[str | Path], scale: str) -> Future:
        return self._pool.submit(self._call, [Path(p) for p in paths], scale)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._http.close()

    def _call(self, paths: list[Path], scale: str) -> list[dict[str, Any]]:
        with contextlib.ExitStack() as files:   # streamed from disk: a chunk of large images is not held in memory
            parts = [("files", (path.name, files.enter_context(open(path, "rb")))) for path in paths]
            uploaded = self._http.post(self._upload_url, files=parts)
        uploaded.raise_for_status()
        data = [{"path": server_path, "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}
                for path, server_path in zip(paths, uploaded.json(), strict=True)]
        started = self._http.post(self._call_url, json={"data": [data, scale]})
        started.raise_for_status()
        return call_answer(self._http, f"{self._call_url}/{started.json()['event_id']}")[0]


class SubmitCalls:
    """``/predict_batch`` through a client's own ``submit`` (gradio_client's job, or anything shaped like it)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def submit(self, paths: Sequence[str | Path], scale: str) -> Any:
        return self._client.submit([handle_file(str(path)) for path in paths], scale, api_name=BATCH_API_NAME)

    def close(self) -> None:
        pass


def call_answer(http: httpx.Client, url: str) -> list[Any]:
    """A call's outputs, read from its event stream (``GET /gradio_api/call/<api_name>/<event_id>``: the
    data of ``event: complete``); :class:`BatchCallError` with the Space's message for ``event: error``."""
    event = None
    with http.stream("GET", url) as stream:
        stream.raise_for_status()
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                payload = json.loads(line.split(":", 1)[1])
                if event == "error":
                    raise BatchCallError(_error_message(payload))
                return payload
    raise BatchCallError("the Space closed the call's event stream without an answer")


def _error_message(payload: Any) -> str:
    if isinstance(payload, dict):   # a gr.Error: {"error": "...", "title": ..., ...}
        payload = payload.get("error") or payload.get("message") or payload
    return " ".join(str(payload or "the Space reported an error without a message").split())
