"""Run the Gradio Space (``python space/app.py``) as a child process, for load/soak runs and tests.

The child gets its own port on 127.0.0.1 and its output goes to a temporary file, so the
caller knows its PID (for memory figures) and can read its log afterwards.

Example:
    ```python
    >>> with SpaceProcess(model_dir="hub_model") as space:
    ...     print(space.url, space.pid)
    ...     Client(space.url).predict(handle_file("tile.png"), api_name="/predict")
    http://127.0.0.1:40123 81234
    >>> "Serving" in space.output()
    True
    ```
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import IO

import psutil

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "space" / "app.py"
_MODEL_VARS = ("MODEL_DIR", "MODEL_REPO", "MODEL_REVISION")


class SpaceStartError(RuntimeError):
    """The Space exited or did not answer in time; the message ends with its last output."""

def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SpaceProcess:
    """``python space/app.py`` on a free loopback port; use as a context manager.

    Args:
        model_dir: ``MODEL_DIR`` for the child; ``None`` leaves the model variables to ``env``
            (or unset: the app's default ``hub_model/``).
        env: extra environment variables (they win over the inherited ones).
        timeout: seconds to wait for the server to answer ``/gradio_api/info``.
        app: the app file to run (default ``space/app.py``; a patched copy in tests).
    """

    def __init__(self, *, model_dir: str | os.PathLike | None = None,
                 env: Mapping[str, str] | None = None, timeout: float = 240.0,
                 app: str | os.PathLike = APP) -> None:
        self.app = Path(app).resolve()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.timeout = timeout
        self._env = {k: v for k, v in os.environ.items() if k not in _MODEL_VARS}
        self._env.update({"GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(self.port),
                          "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"})
        if model_dir is not None:
            self._env["MODEL_DIR"] = str(Path(model_dir).resolve())
        self._env.update(env or {})
        self._log: IO[bytes] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("The Space is not started.")
        return self._proc.pid

    def start(self) -> "SpaceProcess":
        """Start the child and wait until it answers; raises `SpaceStartError` otherwise."""
        self._log = tempfile.TemporaryFile()
        self._proc = subprocess.Popen([sys.executable, str(self.app)], cwd=self.app.parent, env=self._env,
                                      stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise SpaceStartError(f"The Space exited with code {self._proc.returncode}:\n"
                                      f"{self.output()[-4000:]}")
            if self._answers():
                return self
            time.sleep(0.25)
        self.stop()
        raise SpaceStartError(f"The Space at {self.url} did not answer within {self.timeout:.0f} s:\n"
                              f"{self.output()[-4000:]}")

    def stop(self) -> None:
        """Terminate the child (kill it if it does not stop within 15 s)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def output(self) -> str:
        """Everything the child printed so far (stdout and stderr)."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def __enter__(self) -> "SpaceProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._log is not None:
            self._log.close()
            self._log = None

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/gradio_api/info", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` in bytes.

    Example:
        >>> rss_bytes(os.getpid()) > 0
        True
    """

    return int(psutil.Process(pid).memory_info().rss)


def peak_rss_bytes() -> int:
    """This process's own high-water mark of resident memory (VmHWM), in bytes.

    Not ``resource.getrusage(...).ru_maxrss``: Linux carries that over fork and exec, so a benchmark
    started by a large parent (``serving_bench`` holds both engines) would report the parent's size.
    """
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) * 1024
