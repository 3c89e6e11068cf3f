"""Scored slides the Space can show in its zoomable viewer: opaque ids, DeepZoom tiles, expiry.

Only a slide this server scored is ever served. :meth:`SlideViews.add` links the slide file and its
results folder under a fresh random id (128 bits, hex); the tile routes (``slide_viewer.py``) look the
id up here and nothing else: no path from a request ever reaches the file system. An id lives
``keep_s`` seconds; then its folder (the slide and its result files) is deleted and the id answers
404 like any unknown one. Folders left by an earlier process are removed at start.

Tiles come from OpenSlide's own DeepZoom generator (``openslide.deepzoom``), which cuts the pyramid
into the tiles OpenSeadragon asks for; rendered tiles are kept in a least-recently-used cache held
to ``cache_bytes``, and at most ``open_slides`` generators are kept (a dropped one's slide is closed by
OpenSlide when its last reference goes: never under a tile still rendering on another thread). Rendering is blocking C code: the
routes call it on worker threads, never on the event loop.

Example:
    >>> views = SlideViews(Path("/tmp/gradio/slide-views"), keep_s=3600)
    >>> view_id, folder = views.new_folder()            # the slide is scored into folder / "results"
    >>> view = views.add(view_id, Path("upload/scan.svs"))
    >>> views.dzi(view.id)[:6]
    '<Image'
    >>> len(views.tile(view.id, level=9, col=0, row=0)) > 0            # JPEG bytes
    True
"""
from __future__ import annotations

import io
import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import openslide
from openslide.deepzoom import DeepZoomGenerator

TILE_SIZE = 254          # + 1 px overlap on each side: 256 px tiles, OpenSeadragon's and OpenSlide's default
OVERLAP = 1
JPEG_QUALITY = 80
ID_PATTERN = re.compile(r"[0-9a-f]{32}")
log = logging.getLogger("space")

__all__ = ["SlideView", "SlideViews", "UnknownView", "ID_PATTERN"]


class UnknownView(LookupError):
    """No slide with this id: never scored here, expired, or a tile outside its pyramid (HTTP 404)."""


@dataclass(frozen=True)
class SlideView:
    """One scored slide as the viewer serves it: ``folder`` holds the slide file and its results."""

    id: str
    folder: Path
    slide: Path
    expires_at: float        # time.time() seconds

    @property
    def results(self) -> Path:
        return self.folder / "results"


class SlideViews:
    """The registry of viewable slides, their open DeepZoom generators and a bounded tile cache."""

    def __init__(self, root: Path, *, keep_s: float = 3600.0, open_slides: int = 4,
                 cache_bytes: int = 64 * 1024 * 1024, clock: Callable[[], float] = time.time) -> None:
        self.root, self.keep_s, self.open_slides, self.cache_bytes = Path(root), keep_s, open_slides, cache_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._views: dict[str, SlideView] = {}
        self._generators: OrderedDict[str, DeepZoomGenerator] = OrderedDict()
        self._tiles: OrderedDict[tuple[str, int, int, int], bytes] = OrderedDict()
        self._cached = 0
        self._leftovers_removed = False

    # Registry ----------------------------------------------------------------------------------

    def new_folder(self) -> tuple[str, Path]:
        """A fresh id and its empty folder, for a slide about to be scored (``add`` registers it)."""
        self.expire()
        view_id = secrets.token_hex(16)
        folder = self.root / view_id
        (folder / "results").mkdir(parents=True)
        return view_id, folder

    def add(self, view_id: str, slide: Path) -> SlideView:
        """Register the scored ``slide`` under ``view_id`` (from :meth:`new_folder`): the file is linked
        into the view's folder (a hard link when it can: no copy of a large slide; else copied), so the
        upload itself can be deleted at once."""
        folder = self.root / view_id
        kept = folder / f"slide{''.join(Path(slide).suffixes[-1:]).lower() or '.svs'}"
        try:
            os.link(slide, kept)
        except OSError:              # another file system, or links not allowed: copy
            shutil.copyfile(slide, kept)
        view = SlideView(view_id, folder, kept, self._clock() + self.keep_s)
        with self._lock:
            self._views[view_id] = view
        return view

    def get(self, view_id: str) -> SlideView:
        """The live view of ``view_id``; :class:`UnknownView` when there is none (or it just expired)."""
        if not ID_PATTERN.fullmatch(view_id or ""):
            raise UnknownView(view_id)
        self.expire()
        with self._lock:
            view = self._views.get(view_id)
        if view is None:
            raise UnknownView(view_id)
        return view

    def expire(self) -> list[str]:
        """Forget every view past its time and delete its folder; the first call also removes folders
        an earlier process left. Returns the ids removed."""
        now = self._clock()
        with self._lock:
            gone = [view for view in self._views.values() if view.expires_at <= now]
            for view in gone:
                del self._views[view.id]
                self._forget(view.id)
            known = set(self._views)
            first, self._leftovers_removed = not self._leftovers_removed, True
        for view in gone:
            shutil.rmtree(view.folder, ignore_errors=True)
        if first and self.root.is_dir():         # a restarted server knows none of the old ids
            for folder in self.root.iterdir():
                if folder.is_dir() and folder.name not in known and folder.stat().st_mtime < now - 60:
                    shutil.rmtree(folder, ignore_errors=True)
        if gone:
            log.info("Slide viewer: %d expired slide(s) deleted", len(gone))
        return [view.id for view in gone]

    def discard(self, view_id: str) -> None:
        """Drop a view at once (a slide that could not be scored)."""
        with self._lock:
            view = self._views.pop(view_id, None)
            self._forget(view_id)
        shutil.rmtree(self.root / view_id if view is None else view.folder, ignore_errors=True)

    # Tiles -------------------------------------------------------------------------------------

    def dzi(self, view_id: str) -> str:
        """The DeepZoom descriptor (XML) of a view's slide."""
        return self._generator(view_id).get_dzi("jpeg")

    def tile(self, view_id: str, *, level: int, col: int, row: int) -> bytes:
        """One JPEG tile of the DeepZoom pyramid; :class:`UnknownView` outside it."""
        key = (view_id, level, col, row)
        with self._lock:
            cached = self._tiles.get(key)
            if cached is not None:
                self._tiles.move_to_end(key)
                return cached
        generator = self._generator(view_id)
        if not (0 <= level < generator.level_count):
            raise UnknownView(f"{view_id} level {level}")
        cols, rows = generator.level_tiles[level]
        if not (0 <= col < cols and 0 <= row < rows):
            raise UnknownView(f"{view_id} tile {col},{row}")
        image = generator.get_tile(level, (col, row))
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, "JPEG", quality=JPEG_QUALITY)
        data = buffer.getvalue()
        with self._lock:
            if view_id in self._views:          # not expired while it rendered
                self._tiles[key] = data
                self._cached += len(data)
                while self._cached > self.cache_bytes and self._tiles:
                    self._cached -= len(self._tiles.popitem(last=False)[1])
        return data

    @property
    def cached_bytes(self) -> int:
        return self._cached

    def _generator(self, view_id: str) -> DeepZoomGenerator:
        view = self.get(view_id)
        with self._lock:
            generator = self._generators.get(view_id)
            if generator is not None:
                self._generators.move_to_end(view_id)
                return generator
        # limit_bounds=False: the pyramid covers all of level 0, so field boxes (level-0 pixels) need no offset.
        generator = DeepZoomGenerator(openslide.OpenSlide(view.slide), tile_size=TILE_SIZE, overlap=OVERLAP,
                                      limit_bounds=False)
        with self._lock:
            generator = self._generators.setdefault(view_id, generator)
            while len(self._generators) > self.open_slides:
                self._generators.popitem(last=False)
        return generator

    def _forget(self, view_id: str) -> None:
        """Drop the view's generator and its cached tiles (caller holds the lock)."""
        self._generators.pop(view_id, None)
        for key in [key for key in self._tiles if key[0] == view_id]:
            self._cached -= len(self._tiles.pop(key))
