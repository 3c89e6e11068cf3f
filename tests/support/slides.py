"""Test-only slides on top of ``scripts.perf.synthetic_slides`` (the mosaics and the pyramid writer):
flat colour blocks, a marker pen line, a hostile header declaring a huge slide in a few kilobytes, and
the tiny test model with a physical scale.

Example:
    >>> mosaic = lung_mosaic(tiles, layout=["L.L", ".L."])              # scripts.perf.synthetic_slides
    >>> write_slide(tmp_path / "pen.svs", pen_stroke(mosaic), mpp=0.25)
    >>> write_huge_slide(tmp_path / "huge.svs", 300_000, 300_000)      # a header, a few kilobytes
"""
from __future__ import annotations

import json
import math
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

from scripts.perf.synthetic_slides import Mosaic, aperio_description
from tests.support.tiny_model import write_tiny_model_folder

TINY_MPP = 0.368          # the tiny test model's um/px: the lung model's, whose nucleus reference it borrows


def flat_mosaic(colour: tuple[int, int, int], *, rows: int = 2, cols: int = 3, block: int = 1000,
                noise: float = 3.0, seed: int = 0) -> Mosaic:
    """Blocks of one colour with a little pixel noise (pink without nuclei, or blank glass)."""
    rng = np.random.default_rng(seed)
    image = np.clip(np.asarray(colour, np.float32) + rng.normal(0, noise, (block, block, 3)), 0, 255).astype(np.uint8)
    return Mosaic(rows, cols, block, {(r, c): image for r in range(rows) for c in range(cols)})


def write_huge_slide(path: str | os.PathLike, width: int, height: int, *, mpp: float = 0.25,
                     tile: int = 4096) -> Path:
    """An Aperio TIFF declaring ``width`` x ``height`` px in a few kilobytes: every tile entry points
    at the same compressed blank tile (a broken or hostile header; tifffile would write every tile)."""
    data = zlib.compress(bytes(tile * tile * 3), 9)
    count = math.ceil(width / tile) * math.ceil(height / tile)
    description = aperio_description(width, height, tile, mpp).encode("ascii") + b"\0"
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
