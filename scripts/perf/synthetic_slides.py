"""Synthetic whole-slide images: pyramidal tiled TIFFs written with tifffile, tile by tile.

OpenSlide opens them as Aperio SVS (the first page's description starts ``Aperio Image Library``,
``|MPP = x`` when the scale is known) or as generic tiled TIFF (microns per pixel in the resolution
tags). The content is a :class:`Mosaic`: square blocks of source images on blank glass, a pure
function of level-0 coordinates (:meth:`Mosaic.region`), so a caller can compare what slide code
read with the exact source pixels, and the writer builds every level tile by tile without holding a
level in memory. The benchmark (``scripts.perf.slide_bench``) builds its slide here, and so do the
tests (``tests.support.slides`` adds the test-only ones); scripts never import ``tests``.

The lung slides are mosaics of the MoNuSeg TCGA lung tiles (``../shared/data/external-he/lung-tcga``,
1000 px at 40x, about 0.25 um/px; CC BY-NC-SA, so the files live in temporary folders only and are
never committed).

Example:
    >>> mosaic = lung_mosaic(lung_tiles(root), layout=["L.L", ".L."])
    >>> write_slide(tmp_path / "lung.svs", mosaic, mpp=0.25)
    >>> mosaic.region(1000, 0, 512, 512).shape
    (512, 512, 3)
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import tifffile

GLASS = (242, 241, 239)
TILE = 256

__all__ = ["GLASS", "TILE", "Mosaic", "aperio_description", "lung_mosaic", "lung_tiles", "random_layout",
           "write_slide"]


@dataclass
class Mosaic:
    """Square blocks of ``block`` level-0 pixels on glass; ``blocks[(row, col)]`` is a source image
    shown at ``block / source side`` times its size (e.g. 1000 px tiles as 2000 px blocks: 2x)."""

    rows: int
    cols: int
    block: int
    blocks: dict[tuple[int, int], np.ndarray]
    background: tuple[int, int, int] = GLASS
    _cache: dict[tuple[int, int, int], np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def width(self) -> int:
        return self.cols * self.block

    @property
    def height(self) -> int:
        return self.rows * self.block

    def region(self, x: int, y: int, width: int, height: int, downsample: int = 1) -> np.ndarray:
        """The level-0 box (x, y, width x downsample, height x downsample) at 1/downsample (RGB).

        At a downsample that does not divide the block size, block ``i`` spans level pixels
        ``i * block // downsample`` to ``(i + 1) * block // downsample`` (sizes differ by one pixel).
        """
        out = np.empty((height, width, 3), np.uint8)
        out[:] = self.background
        x0, y0 = x // downsample, y // downsample

        def span(index: int) -> tuple[int, int]:
            return index * self.block // downsample, (index + 1) * self.block // downsample

        first_row, first_col = y0 * downsample // self.block, x0 * downsample // self.block
        for row in range(max(0, first_row), min(self.rows, (y0 + height) * downsample // self.block + 1)):
            for col in range(max(0, first_col), min(self.cols, (x0 + width) * downsample // self.block + 1)):
                if (row, col) not in self.blocks:
                    continue
                (top, bottom), (left, right) = span(row), span(col)
                image = self._scaled(row, col, bottom - top, right - left)
                a, b = max(top, y0), min(bottom, y0 + height)
                c, d = max(left, x0), min(right, x0 + width)
                if a < b and c < d:
                    out[a - y0:b - y0, c - x0:d - x0] = image[a - top:b - top, c - left:d - left]
        return out

    def _scaled(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        source = self.blocks[(row, col)]
        key = (id(source), height, width)      # blocks share their source images: one copy per size
        if key not in self._cache:
            shrink = height <= source.shape[0]
            self._cache[key] = cv2.resize(source, (width, height),
                                          interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
        return self._cache[key]


def lung_tiles(root: Path) -> list[np.ndarray]:
    """The MoNuSeg TCGA lung tiles (RGB, 1000 x 1000) under ``root`` (external-he/lung-tcga)."""
    paths = sorted(root.glob("*/*.jpg"))
    return [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths]


def random_layout(rows: int, cols: int, *, tissue: float, seed: int = 0) -> list[str]:
    """A layout of ``rows`` x ``cols`` blocks, about ``tissue`` of them lung tiles, the rest glass."""
    rng = np.random.default_rng(seed)
    return ["".join("L" if rng.random() < tissue else "." for _ in range(cols)) for _ in range(rows)]


def lung_mosaic(tiles: Sequence[np.ndarray], layout: Sequence[str], *, zoom: int = 1) -> Mosaic:
    """A mosaic from a text layout: ``L`` a lung tile (the next one, cycling), ``.`` glass.

    ``zoom``: level-0 pixels per source pixel (2: a 0.125 um/px slide made from 0.25 um/px tiles).
    """
    side = tiles[0].shape[0] * zoom
    blocks, index = {}, 0
    for row, line in enumerate(layout):
        for col, char in enumerate(line):
            if char == "L":
                blocks[(row, col)] = tiles[index % len(tiles)]
                index += 1
    return Mosaic(len(layout), max(len(line) for line in layout), side, blocks)


def write_slide(path: str | os.PathLike, mosaic: Mosaic, *, mpp: float | None = 0.25,
                downsamples: Sequence[int] = (1, 4), vendor: str = "aperio", tile: int = TILE) -> Path:
    """A pyramidal tiled TIFF of ``mosaic`` (zlib tiles), one page per level in ``downsamples``."""
    path = Path(path)
    width, height = mosaic.width, mosaic.height
    with tifffile.TiffWriter(path, bigtiff=width * height * 3 > 2**31) as writer:
        for index, downsample in enumerate(downsamples):
            w, h = math.ceil(width / downsample), math.ceil(height / downsample)
            extra: dict[str, object] = {}
            if vendor == "aperio":
                extra["description"] = (aperio_description(width, height, tile, mpp) if index == 0
                                        else f"Aperio Image Library v12.0.0\r\n{width}x{height} -> {w}x{h}")
            elif mpp is not None:
                per_cm = 1e4 / (mpp * downsample)
                extra.update(resolution=(per_cm, per_cm), resolutionunit="CENTIMETER")
            writer.write(_tiles(mosaic, w, h, downsample, tile), shape=(h, w, 3), dtype=np.uint8,
                         tile=(tile, tile), compression="zlib", compressionargs={"level": 1},
                         photometric="rgb", metadata=None, subfiletype=0 if index == 0 else 1, **extra)
    return path


def aperio_description(width: int, height: int, tile: int, mpp: float | None) -> str:
    """The first page's description that makes OpenSlide read a TIFF as Aperio SVS (``|MPP = x`` when known)."""
    scale = "" if mpp is None else f"|AppMag = {10 / mpp:g}|MPP = {mpp:g}"
    return f"Aperio Image Library v12.0.0\r\n{width}x{height} [0,0 {width}x{height}] ({tile}x{tile}) zlib/RGB{scale}"


def _tiles(mosaic: Mosaic, width: int, height: int, downsample: int, tile: int) -> Iterator[np.ndarray]:
    for y in range(0, height, tile):
        for x in range(0, width, tile):
            yield mosaic.region(x * downsample, y * downsample, tile, tile, downsample)
