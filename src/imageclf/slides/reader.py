"""One whole-slide image, read lazily through OpenSlide: levels, metadata, regions and a bounded thumbnail.

OpenSlide (``openslide-python`` with the ``openslide-bin`` wheel, no system library) reads SVS,
NDPI, MRXS, SCN, generic tiled TIFF and DICOM. Nothing here reads more than one region of at most
``CHUNK_SIDE`` x ``CHUNK_SIDE`` pixels at a time, so memory stays bounded whatever the slide's size;
the thumbnail is built chunk by chunk from the coarsest level that is fine enough.

Errors are :class:`SlideError` with one plain sentence: not a slide, damaged, absurd dimensions.

Example:
    >>> with SlideReader("CMU-1-Small-Region.svs") as slide:
    ...     slide.dimensions, slide.metadata_mpp, slide.read(0, 0, 0, 224, 224).shape
    ((2220, 2967), 0.499, (224, 224, 3))
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np
import openslide

from imageclf.core.imaging import IMAGE_SUFFIXES
from imageclf.errors import ModelError, first_line

CHUNK_SIDE = 2048                 # largest region read at once (pixels of the level read)
MAX_PIXELS = 40_000_000_000       # 200,000 x 200,000 px: larger than any real scan at 0.25 um/px
MAX_SIDE = 400_000                # one side longer than this is a broken header, not a slide
BACKGROUND = (255, 255, 255)      # transparent (unscanned) areas become white glass

# TIFF ResolutionUnit values OpenSlide reports, in microns ("none" says nothing physical).
_MICRONS_PER_UNIT = {"centimeter": 10_000.0, "inch": 25_400.0}

__all__ = ["SlideError", "SlideReader", "input_kind", "is_slide", "CHUNK_SIDE", "MAX_PIXELS", "MAX_SIDE"]


class SlideError(ModelError, ValueError):
    """A slide that cannot be scored (unreadable, damaged, absurd size or scale); one sentence for people."""


def is_slide(path: str | os.PathLike) -> bool:
    """True when OpenSlide recognises the file as a whole-slide format it can read."""
    try:
        return openslide.OpenSlide.detect_format(str(path)) is not None
    except (OSError, openslide.OpenSlideError):
        return False


def input_kind(path: str | os.PathLike, *, max_image_pixels: int) -> str:
    """``"slide"`` or ``"image"``: how a file is scored.

    A file OpenSlide reads is a slide, unless it is a single-level generic TIFF small enough to
    decode whole (a plain TIFF: the ordinary image path). Other files with an image suffix take the
    image path (whose decoder names what is wrong); anything else is tried as a slide, so its error
    says why it is not one.
    """
    path = Path(path)
    if is_slide(path):
        try:
            with openslide.OpenSlide(str(path)) as slide:
                width, height = slide.dimensions
                plain = (slide.properties.get(openslide.PROPERTY_NAME_VENDOR) == "generic-tiff"
                         and slide.level_count == 1 and width * height <= max_image_pixels)
        except (openslide.OpenSlideError, OSError):
            return "slide"       # the reader will say what is wrong
        return "image" if plain else "slide"
    return "image" if path.suffix.lower() in IMAGE_SUFFIXES else "slide"


class SlideReader:
    """A whole-slide image opened with OpenSlide; use as a context manager (``close`` frees it)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise SlideError(f"File not found: {self.path}.")
        try:
            self._slide = openslide.OpenSlide(str(self.path))
        except openslide.OpenSlideUnsupportedFormatError:
            if _is_tiff(self.path):
                raise SlideError(f"{self.path.name} is a TIFF file OpenSlide cannot read: damaged, incomplete, "
                                 "or not a tiled pyramid.") from None
            raise SlideError(f"{self.path.name} is not a whole-slide image OpenSlide can read "
                             "(SVS, NDPI, MRXS, SCN, tiled TIFF or DICOM).") from None
        except (openslide.OpenSlideError, OSError) as err:
            raise SlideError(f"{self.path.name} is damaged or incomplete and cannot be opened "
                             f"({first_line(err)}).") from None
        self._check_dimensions()

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._slide.close()

    # Metadata ------------------------------------------------------------------------------

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 (width, height) in pixels."""
        return tuple(self._slide.dimensions)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return tuple(tuple(d) for d in self._slide.level_dimensions)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return tuple(float(d) for d in self._slide.level_downsamples)

    @property
    def vendor(self) -> str:
        return str(self._slide.properties.get(openslide.PROPERTY_NAME_VENDOR, "unknown"))

    @property
    def metadata_mpp(self) -> tuple[float, str] | None:
        """(microns per level-0 pixel, where it was read) from ``openslide.mpp-x``/``-y`` (their mean), else
        from the TIFF resolution tags (``tiff.XResolution``/``YResolution`` with ``tiff.ResolutionUnit``
        centimeter or inch, as WSInfer falls back to them); ``None`` when neither says."""
        mpp = self._mean_of(openslide.PROPERTY_NAME_MPP_X, openslide.PROPERTY_NAME_MPP_Y, lambda v: v)
        if mpp is not None:
            return mpp, "openslide.mpp-x/y"
        microns = _MICRONS_PER_UNIT.get(str(self._slide.properties.get("tiff.ResolutionUnit", "")).lower())
        if microns is None:
            return None
        mpp = self._mean_of("tiff.XResolution", "tiff.YResolution", lambda pixels_per_unit: microns / pixels_per_unit)
        return None if mpp is None else (mpp, "TIFF resolution tags")

    def _mean_of(self, key_x: str, key_y: str, convert) -> float | None:
        values = []
        for key in (key_x, key_y):
            try:
                value = float(self._slide.properties[key])
            except (KeyError, ValueError):
                return None
            if not math.isfinite(value) or value <= 0:
                return None
            values.append(convert(value))
        return sum(values) / len(values)

    @property
    def objective_power(self) -> float | None:
        try:
            return float(self._slide.properties[openslide.PROPERTY_NAME_OBJECTIVE_POWER])
        except (KeyError, ValueError):
            return None

    def describe(self) -> dict[str, object]:
        """JSON-ready facts about the file and its pyramid."""
        return {"file": self.path.name, "path": str(self.path.resolve()), "bytes": self.path.stat().st_size,
                "vendor": self.vendor, "dimensions": list(self.dimensions),
                "objective_power": self.objective_power,
                "levels": [{"width": w, "height": h, "downsample": round(d, 4)}
                           for (w, h), d in zip(self.level_dimensions, self.level_downsamples, strict=True)]}

    # Pixels ---------------------------------------------------------------------------------

    def read(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        """RGB uint8 (height x width) of ``level`` whose top-left is level-0 pixel (x, y).

        Transparent areas (outside the scanned region) come back as white glass.

        Raises:
            SlideError: the region's tiles are damaged or missing.
        """
        if width > CHUNK_SIDE * 2 or height > CHUNK_SIDE * 2:
            raise ValueError(f"Read at most {2 * CHUNK_SIDE} px per side at once, not {width} x {height}.")
        try:
            rgba = np.asarray(self._slide.read_region((int(x), int(y)), int(level), (int(width), int(height))))
        except (openslide.OpenSlideError, OSError, ValueError) as err:
            raise SlideError(f"{self.path.name} is damaged: the region at ({x}, {y}) of level {level} "
                             f"could not be read ({first_line(err)}).") from None
        return _on_white(rgba)

    def thumbnail(self, downsample: float) -> np.ndarray:
        """The whole slide at ``downsample`` level-0 pixels per thumbnail pixel (RGB uint8).

        Built chunk by chunk from the coarsest level no coarser than ``downsample``.
        """
        width, height = self.dimensions
        out_w, out_h = max(1, math.ceil(width / downsample)), max(1, math.ceil(height / downsample))
        level = self.best_level(downsample)
        level_scale = downsample / self.level_downsamples[level]     # level pixels per thumbnail pixel
        step = max(1, int(CHUNK_SIDE // level_scale))                 # thumbnail pixels per chunk side
        thumb = np.empty((out_h, out_w, 3), np.uint8)
        for ty in range(0, out_h, step):
            for tx in range(0, out_w, step):
                tw, th = min(step, out_w - tx), min(step, out_h - ty)
                lw, lh = max(1, round(tw * level_scale)), max(1, round(th * level_scale))
                region = self.read(round(tx * downsample), round(ty * downsample), level, lw, lh)
                thumb[ty:ty + th, tx:tx + tw] = cv2.resize(region, (tw, th), interpolation=cv2.INTER_AREA)
        return thumb

    def best_level(self, downsample: float) -> int:
        """The coarsest level whose downsample is at most ``downsample`` (level 0 if none)."""
        fine = [i for i, d in enumerate(self.level_downsamples) if d <= downsample * (1 + 1e-6)]
        return max(fine, key=lambda i: self.level_downsamples[i]) if fine else 0

    def _check_dimensions(self) -> None:
        width, height = self.dimensions
        if width <= 0 or height <= 0 or width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
            self.close()
            raise SlideError(f"{self.path.name} declares {width:,} x {height:,} pixels, outside what a "
                             f"scanned slide can be (at most {MAX_SIDE:,} px per side and "
                             f"{MAX_PIXELS:,} pixels); its header is probably broken.")


def _is_tiff(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _on_white(rgba: np.ndarray) -> np.ndarray:
    """RGBA (OpenSlide's output, not premultiplied) composited onto white, as RGB uint8."""
    if rgba.ndim != 3 or rgba.shape[-1] != 4:
        return np.ascontiguousarray(rgba[..., :3])
    alpha = rgba[..., 3]
    if alpha.min(initial=255) == 255:
        return np.ascontiguousarray(rgba[..., :3])
    weight = alpha[..., None].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * weight + np.asarray(BACKGROUND, np.float32) * (1.0 - weight)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
