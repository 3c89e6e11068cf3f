"""Take each upload out of Gradio's upload cache as its request reads it: no image file outlives it.

Gradio saves an upload as ``<GRADIO_TEMP_DIR>/<hash of the bytes>/<file name>`` and keeps it
until ``delete_cache`` (if set) ages it out. ``UploadJanitor.take`` reads the file and deletes
it at once. Identical bytes under the same name share one path, so another request may still
be queued for the file just deleted; for it, the bytes are kept in memory for ``keep_s``
seconds (at most ``keep_bytes`` in all), never on disk. The emptied ``<hash>`` folder stays for
``folder_grace_s`` seconds: Gradio answers an upload before it moves the file into that folder
(a background task), so removing the folder at once made a concurrent identical upload's move
fail, leaving its temporary copy behind for good. Only files inside the upload folder are
touched, and with a ``registry`` (Gradio's ``demo.upload_file_set``) only real uploads, so the
copies Gradio keeps of example images stay.

A library that must open a path itself (OpenSlide reads a slide lazily, far too large to hold in
memory) uses ``UploadJanitor.claim`` instead: the path for the length of a ``with`` block, then the
file deleted under the same rules. Concurrent claims of one file share it; the last one deletes it.

Example (in a Gradio handler that receives the raw payload, ``preprocess=False``):
    >>> UPLOADS = UploadJanitor(SETTINGS.upload_dir)   # GRADIO_TEMP_DIR, as Gradio reads it
    >>> UPLOADS.registry = demo.upload_file_set  # once the Blocks exist
    >>> data = UPLOADS.take(payload["path"])     # the bytes; the file is gone
    >>> rgb = decode_image(data)
    >>> with UPLOADS.claim(slide_path) as path:  # a path OpenSlide opens; deleted after the block
    ...     result = score_slide(path, model)
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Container, Iterator
from pathlib import Path

from imageclf.core.imaging import ImageError, check_file_size

GONE = ("The uploaded file is no longer on the server (it was removed after an earlier request); "
        "please send it again.")


class UploadJanitor:
    """Reads uploads and deletes them; remembers recent ones briefly, in memory, for identical requests.

    Args:
        folder: the upload folder (Gradio's: the ``upload_dir`` setting, from ``GRADIO_TEMP_DIR``).
        registry: paths Gradio recorded as uploads (``demo.upload_file_set``), read only;
            ``None`` treats every file in ``folder`` as an upload.
        keep_s: how long the bytes of a deleted upload stay in memory for identical requests.
        keep_bytes: memory cap for those bytes (oldest dropped first).
        folder_grace_s: how long an emptied upload folder stays before a later ``take`` removes it.
    """

    def __init__(self, folder: str | os.PathLike, *, registry: Container[str] | None = None,
                 keep_s: float = 60.0, keep_bytes: int = 64 * 2**20, folder_grace_s: float = 60.0) -> None:
        self.folder = Path(folder).resolve()
        self.registry = registry
        self.keep_s, self.keep_bytes, self.folder_grace_s = keep_s, keep_bytes, folder_grace_s
        self._recent: OrderedDict[Path, tuple[float, bytes]] = OrderedDict()
        self._recent_bytes = 0   # the sum over _recent, kept as it changes: a folder client sends thousands
        self._emptied: dict[Path, float] = {}  # upload folder -> when it may be removed
        self._claims: Counter[Path] = Counter()  # claimed upload -> requests still using it
        self._lock = threading.Lock()

    def take(self, path: str | os.PathLike) -> bytes | str:
        """The upload's bytes, its file deleted; any other path is returned unchanged.

        Example:
            >>> janitor.take("/tmp/gradio/ab12.../tile.png")   # -> b"\\x89PNG..."; file deleted
            >>> janitor.take("/srv/examples/tile.png")         # -> "/srv/examples/tile.png"

        Raises:
            ImageError: the upload is too large, or was deleted longer than ``keep_s`` ago.
        """
        raw = os.fspath(path)
        real = Path(raw).resolve()
        if self.folder not in real.parents:
            return raw
        with self._lock:  # read-and-delete is one step for concurrent identical uploads
            self._expire(time.monotonic())
            if real.is_file():
                if self.registry is not None and raw not in self.registry:
                    return raw  # a file Gradio cached itself (an example image): not ours to delete
                try:
                    check_file_size(real.stat().st_size)
                    data = real.read_bytes()
                finally:
                    self._delete(real)
                self._remember(real, data)
                return data
            if real in self._recent:
                return self._recent[real][1]
        raise ImageError(GONE)

    @contextlib.contextmanager
    def claim(self, path: str | os.PathLike) -> Iterator[Path]:
        """The upload's path while the block runs, its file deleted when the block ends (also on an
        error); any other path (outside the folder, or not a recorded upload) is yielded and kept.

        Example:
            >>> with janitor.claim("/tmp/gradio/ab12.../scan.svs") as path:
            ...     score_slide(path, model)                   # the file is deleted after this line

        Raises:
            ImageError: the upload was already deleted (by an earlier request of the same bytes).
        """
        raw = os.fspath(path)
        real = Path(raw).resolve()
        with self._lock:
            self._expire(time.monotonic())
            ours = self.folder in real.parents and (self.registry is None or raw in self.registry)
            if ours and not real.is_file():
                raise ImageError(GONE)
            if ours:
                self._claims[real] += 1
        if not ours:
            yield Path(raw)
            return
        try:
            yield Path(raw)
        finally:
            with self._lock:  # a concurrent request of the same bytes may still be reading it
                self._claims[real] -= 1
                if self._claims[real] <= 0:
                    del self._claims[real]
                    self._delete(real)

    def _delete(self, real: Path) -> None:
        """Delete an upload; its emptied ``<hash>`` folder goes ``folder_grace_s`` later (caller holds the lock)."""
        real.unlink(missing_ok=True)
        if real.parent != self.folder:
            self._emptied.pop(real.parent, None)   # re-added at the end: the dict stays in expiry order
            self._emptied[real.parent] = time.monotonic() + self.folder_grace_s

    def _remember(self, path: Path, data: bytes) -> None:
        self._forget(path)
        if len(data) > self.keep_bytes or self.keep_s <= 0:
            return
        self._recent[path] = (time.monotonic() + self.keep_s, data)
        self._recent_bytes += len(data)
        while self._recent_bytes > self.keep_bytes:
            self._forget(next(iter(self._recent)))

    def _forget(self, path: Path) -> None:
        entry = self._recent.pop(path, None)
        if entry is not None:
            self._recent_bytes -= len(entry[1])

    def _expire(self, now: float) -> None:
        # Both are kept in the order they expire (one delay each), so this stops at the first one still kept
        # instead of walking thousands of entries on every upload of a folder.
        while self._recent and next(iter(self._recent.values()))[0] <= now:
            self._forget(next(iter(self._recent)))
        while self._emptied and next(iter(self._emptied.values())) <= now:
            folder = next(iter(self._emptied))
            del self._emptied[folder]
            try:  # only when nothing else is in it (a newer upload of the same bytes keeps it)
                folder.rmdir()
            except OSError:
                pass
