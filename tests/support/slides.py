"""Test slides built with tifffile at test time: pyramidal tiled TIFFs that OpenSlide opens as Aperio SVS
(first page's description starts ``Aperio Image Library``, ``|MPP = x`` when the scale is known) or
as generic tiled TIFF (microns per pixel in the resolution tags).

The lung slides are mosaics of the MoNuSeg TCGA lung tiles (1000 px at 40x, about 0.25 um/px;
CC BY-NC-SA, so these files live in tmp_path only and are never committed) on blank glass. The
content is a pure function of level-0 coordinates (:meth:`Mosaic.region`), so a test can compare
what the slide code read with the exact source pixels, and the writer builds every level tile by
tile from it without holding a level in memory.

Example:
    >>> mosaic = lung_mosaic(tiles, layout=["L.L", ".L."])
    >>> write_slide(tmp_path / "lung.svs", mosaic, mpp=0.25)
    >>> write_huge_slide(tmp_path / "huge.svs", 300_000, 300_000)      # a header, a few kilobytes
    >>> mosaic.region(1000, 0, 512, 512).shape
    (512, 512, 3)
"""
from __future__ import annotations

import json
import math
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import tifffile

from tests.support.tiny_model import write_tiny_model_folder

GLASS = (242, 241, 239)
TILE = 256
TINY_MPP = 0.368          # the tiny test model's um/px: the lung model's, whose nucleus reference it borrows


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


def flat_mosaic(colour: tuple[int, int, int], *, rows: int = 2, cols: int = 3, block: int = 1000,
                noise: float = 3.0, seed: int = 0) -> Mosaic:
    """Blocks of one colour with a little pixel noise (pink without nuclei, or blank glass)."""
    rng = np.random.default_rng(seed)
    image = np.clip(np.asarray(colour, np.float32) + rng.normal(0, noise, (block, block, 3)), 0, 255).astype(np.uint8)
    return Mosaic(rows, cols, block, {(r, c): image for r in range(rows) for c in range(cols)})


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
                extra["description"] = (_aperio(width, height, tile, mpp) if index == 0
                                        else f"Aperio Image Library v12.0.0\r\n{width}x{height} -> {w}x{h}")
            elif mpp is not None:
                per_cm = 1e4 / (mpp * downsample)
                extra.update(resolution=(per_cm, per_cm), resolutionunit="CENTIMETER")
            writer.write(_tiles(mosaic, w, h, downsample, tile), shape=(h, w, 3), dtype=np.uint8,
                         tile=(tile, tile), compression="zlib", compressionargs={"level": 1},
                         photometric="rgb", metadata=None, subfiletype=0 if index == 0 else 1, **extra)
    return path


def write_huge_slide(path: str | os.PathLike, width: int, height: int, *, mpp: float = 0.25,
                     tile: int = 4096) -> Path:
    """An Aperio TIFF declaring ``width`` x ``height`` px in a few kilobytes: every tile entry points
    at the same compressed blank tile (a broken or hostile header; tifffile would write every tile)."""
    data = zlib.compress(bytes(tile * tile * 3), 9)
    count = math.ceil(width / tile) * math.ceil(height / tile)
    description = _aperio(width, height, tile, mpp).encode("ascii") + b"\0"
    entries = 12                                    # tags written below, in ascending order
    extra = 8 + 2 + entries * 12 + 4                 # header + IFD
    bits_at, text_at = extra, extra + 6
    offsets_at = text_at + len(description)
    counts_at = offsets_at + 4 * count
    data_at = counts_at + 4 * count
    tags = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 3, bits_at), (259, 3, 1, 8), (262, 3, 1, 2),
            (270, 2, len(description), text_at), (277, 3, 1, 3), (284, 3, 1, 1), (322, 4, 1, tile),
            (323, 4, 1, tile), (324, 4, count, offsets_at), (325, 4, count, counts_at)]
    out = bytearray(b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(tags)))
    for tag, kind, number, value in tags:
        packed = struct.pack("<HH", value, 0) if kind == 3 and number == 1 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, kind, number) + packed
    out += struct.pack("<I", 0) + struct.pack("<HHH", 8, 8, 8) + description
    out += struct.pack(f"<{count}I", *([data_at] * count)) + struct.pack(f"<{count}I", *([len(data)] * count)) + data
    path = Path(path)
    path.write_bytes(bytes(out))
    return path


def tiny_slide_model_folder(folder: str | os.PathLike, hub_model: Path) -> Path:
    """The tiny test model (``tests.support.tiny_model``) with a physical scale: the bundled model's
    nucleus reference and its microns per pixel, so scale estimates mean the same as for the real one."""
    scale = json.loads((hub_model / "config.json").read_text(encoding="utf-8"))["scale"]
    scale = dict(scale, microns_per_pixel=TINY_MPP)
    return write_tiny_model_folder(folder, config_extra={"scale": scale})


def pen_stroke(mosaic: Mosaic, colour: tuple[int, int, int] = (30, 60, 200), width: int = 60) -> Mosaic:
    """The mosaic with a marker line drawn across its glass block (row 0, last column)."""
    row, col = 0, mosaic.cols - 1
    image = np.empty((mosaic.block, mosaic.block, 3), np.uint8)
    image[:] = mosaic.background
    cv2.line(image, (0, mosaic.block // 3), (mosaic.block, mosaic.block // 2), colour, width)
    return Mosaic(mosaic.rows, mosaic.cols, mosaic.block, {**mosaic.blocks, (row, col): image}, mosaic.background)


def _aperio(width: int, height: int, tile: int, mpp: float | None) -> str:
    scale = "" if mpp is None else f"|AppMag = {10 / mpp:g}|MPP = {mpp:g}"
    return f"Aperio Image Library v12.0.0\r\n{width}x{height} [0,0 {width}x{height}] ({tile}x{tile}) zlib/RGB{scale}"


def _tiles(mosaic: Mosaic, width: int, height: int, downsample: int, tile: int) -> Iterator[np.ndarray]:
    for y in range(0, height, tile):
        for x in range(0, width, tile):
            yield mosaic.region(x * downsample, y * downsample, tile, tile, downsample)
