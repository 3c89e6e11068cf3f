"""Image decoding shared by the Space and the training code.

The model's contract: it takes RGB ``uint8`` pixels of the size named in
``config.json`` (``input_size``); scaling to floats happens inside the model.
This module is the single place that turns a file or an array into that input,
so training and serving cannot drift apart.

Files are decoded with Pillow: it reads the header lazily, so the size limits are
enforced before any pixel is decoded (decompression bombs), it reports truncated
files instead of padding them with grey, and only the formats in ``FORMATS`` are
tried. For the project's 8-bit RGB JPEG tiles it gives the same pixels as the
OpenCV decoder used before. OpenCV is used for resizing.

Limits (``imageclf.settings``: environment variables read once, at start-up): ``MAX_IMAGE_PIXELS`` (64,000,000),
``MAX_IMAGE_BYTES`` (50 MiB) and ``MIN_IMAGE_SIDE`` (8 px).

Example:
    >>> rgb = decode_image("tile.jpeg")          # H x W x 3 uint8, RGB
    >>> x = to_model_input(rgb, size=(224, 224))  # 224 x 224 x 3 uint8
    >>> decode_image(b"%PDF-1.7 ...")
    Traceback (most recent call last):
    ImageError: This file is a PDF document, not an image. Export the page as PNG or JPEG first.
"""
from __future__ import annotations

import io
import logging
import os
import re
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, TiffImagePlugin

from imageclf.errors import ModelError
from imageclf import settings

# Pillow tries only these decoders: less exposed parser code than "anything Pillow knows".
FORMATS: tuple[str, ...] = ("JPEG", "PNG", "TIFF", "WEBP", "BMP", "GIF")  # JPEG covers MPO
# File names the project treats as images (folders, examples, the CLI): what the decoder reads.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp", ".gif"})
READABLE = "JPEG, PNG, TIFF, WebP, BMP or GIF"

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"), (b"GIF8", "GIF"), (b"BM", "BMP"),
)
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
log = logging.getLogger(__name__)


class ImageError(ModelError, ValueError):
    """An input that cannot be turned into an RGB image; the message is for people."""

def decode_image(source: str | os.PathLike | bytes | bytearray | memoryview) -> np.ndarray:
    """Decode a file path or encoded bytes into an H x W x 3 RGB ``uint8`` array.

    Honours the EXIF orientation, uses the first frame of animations and the first page
    of multi-page TIFFs, composites transparency onto white and scales 16-bit and float
    pixels to 8 bits.

    Example:
        >>> decode_image("tile.png").shape
        (224, 224, 3)

    Raises:
        ImageError: missing, empty, oversized, undersized, damaged or non-image input.
    """
    data = _read_bytes(source)
    image = _open_checked(data)
    try:
        image.load()  # the full decode happens here, after the limits were checked
        return _rgb_pixels(_upright(image))
    except ImageError:
        raise
    except Exception as err:  # hostile input must end as a message, never a traceback
        log.info("Decoding a %s image failed: %s: %s", image.format, type(err).__name__, err)
        raise ImageError(_damaged(_format_name(image.format))) from None
    finally:
        image.close()


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Coerce an array (gray, RGBA, float 0-1, 16-bit) into H x W x 3 RGB ``uint8``."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise ImageError(f"Expected an image array, got shape {arr.shape}.")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    if arr.shape[-1] == 4:  # composite transparency onto white, like a viewer would
        alpha = arr[..., 3:4].astype(np.float32) / (65535.0 if arr.dtype == np.uint16 else 255.0 if arr.dtype == np.uint8 else 1.0)
        rgb = arr[..., :3].astype(np.float32)
        white = 65535.0 if arr.dtype == np.uint16 else 255.0 if arr.dtype == np.uint8 else 1.0
        arr = (rgb * alpha + white * (1 - alpha)).astype(arr.dtype)
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == np.uint16:
        return (arr // 257).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageError("The image contains NaN or infinite values.")
        scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
        return np.clip(arr * scale, 0, 255).round().astype(np.uint8)
    return np.clip(arr, 0, 255).astype(np.uint8)


def to_model_input(rgb: np.ndarray, *, size: tuple[int, int]) -> np.ndarray:
    """Resize an RGB ``uint8`` image to the model's ``(height, width)`` input.

    Area interpolation when shrinking (no aliasing), cubic when enlarging.
    """
    rgb = to_rgb_uint8(rgb)
    height, width = size
    if rgb.shape[:2] == (height, width):
        return rgb
    shrinking = rgb.shape[0] >= height and rgb.shape[1] >= width
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return cv2.resize(rgb, (width, height), interpolation=interp)


def load_model_input(path: str | os.PathLike, *, size: tuple[int, int]) -> np.ndarray:
    """Decode a file and resize it to the model input in one call."""
    return to_model_input(decode_image(path), size=size)


def _read_bytes(source: str | os.PathLike | bytes | bytearray | memoryview) -> bytes:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"File not found: {path}")
        check_file_size(path.stat().st_size)  # before reading a huge file into memory
        data = path.read_bytes()
    else:
        data = bytes(source)
    check_file_size(len(data))
    return data


def check_file_size(size: int) -> None:
    """Refuse an empty file or one above the byte limit, before it is read (``ImageError``)."""
    if size == 0:
        raise ImageError("The file is empty.")
    max_bytes = settings.SETTINGS.max_image_bytes   # read at call time: one settings object, never copied
    if size > max_bytes:
        raise ImageError(f"The file is too large ({size / 2**20:.1f} MB); "
                         f"the limit is {max_bytes / 2**20:.0f} MB.")


def _open_checked(data: bytes) -> Image.Image:
    """Parse only the header (Pillow is lazy) and enforce the pixel limits on it."""
    limits = settings.SETTINGS
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as err:  # Pillow's own, looser limit fired first
        declared = re.search(r"\((\d+) pixels\)", str(err))
        amount = f"{int(declared.group(1)):,} pixels" if declared else "too many pixels"
        raise ImageError(f"The image is too large: its header declares {amount}; "
                         f"the limit is {limits.max_image_pixels:,}.") from None
    except Exception:  # not identified by any allowed decoder, or a broken header
        raise ImageError(_unreadable(data)) from None
    width, height = image.size
    if width * height > limits.max_image_pixels:
        image.close()
        raise ImageError(f"The image is too large ({width} x {height} px); "
                         f"the limit is {limits.max_image_pixels:,} pixels.")
    if min(width, height) < limits.min_image_side:
        image.close()
        raise ImageError(f"The image is too small ({width} x {height} px); "
                         f"at least {limits.min_image_side} px per side is needed.")
    return image


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag, as photo viewers do; a broken EXIF block is ignored."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception as err:  # the pixels are fine; only the orientation hint is unusable
        log.info("Ignoring an unreadable EXIF orientation: %s: %s", type(err).__name__, err)
        return image


def _rgb_pixels(image: Image.Image) -> np.ndarray:
    """Pillow image (any supported mode) -> H x W x 3 RGB uint8."""
    mode = image.mode
    if mode.startswith("I;16"):
        return to_rgb_uint8(np.asarray(image).astype(np.uint16))
    if mode == "I":  # 32-bit integers: accepted when they fit the 16-bit range
        arr = np.asarray(image)
        if arr.min(initial=0) < 0 or arr.max(initial=0) > 65535:
            raise ImageError("This image has 32-bit integer pixels, which cannot be shown as "
                             "colours; save it as an 8- or 16-bit image.")
        return to_rgb_uint8(arr.astype(np.uint16))
    if mode == "F":
        return to_rgb_uint8(np.asarray(image, dtype=np.float32))
    if mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        # Transparent areas become white, like a viewer shows them, not whatever RGB they hide.
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        image = canvas
    return np.array(image.convert("RGB"), dtype=np.uint8)


def _format_name(fmt: str | None) -> str:
    return {"MPO": "JPEG", "WEBP": "WebP"}.get(fmt or "", fmt or "image")


def _damaged(fmt: str) -> str:
    return (f"This {fmt} file is damaged or incomplete (it may have been cut off during "
            f"upload) or uses a variant that cannot be read. Save it again as an 8-bit "
            f"RGB {READABLE} file.")


def _unreadable(data: bytes) -> str:
    """Name what a non-image upload is, when that is easy to tell, in plain words."""
    head = data[:1024].lstrip().lower()
    if head.startswith(b"%pdf"):
        return "This file is a PDF document, not an image. Export the page as PNG or JPEG first."
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        return "This file is an SVG drawing, which cannot be read. Export it as PNG or JPEG first."
    if b"<html" in head or head.startswith(b"<!doctype html"):
        return "This file is a web page (HTML), not an image."
    if data.startswith((b"II*\x00", b"MM\x00*")) and _tiff_sample_format(data) == 3:
        return ("This TIFF file stores floating-point colour, which cannot be read. "
                "Save it as an 8- or 16-bit RGB TIFF or PNG.")
    for magic, fmt in _MAGIC:
        if data.startswith(magic):
            return _damaged(fmt)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _damaged("WebP")
    if b"\x00" not in data[:1024] and _is_utf8(data[:1024]):
        return "This file is text, not an image."
    return f"This file is not an image that can be read ({READABLE})."


def _is_utf8(chunk: bytes) -> bool:
    try:
        chunk.decode("utf-8")
    except UnicodeDecodeError as err:  # a character cut by the 1 KiB window still counts
        return err.start >= len(chunk) - 3 and err.reason == "unexpected end of data"
    return True


def _tiff_sample_format(data: bytes) -> int | None:
    """SampleFormat tag of the first TIFF page (1 uint, 2 int, 3 float), or None if unreadable."""
    try:
        ifd = TiffImagePlugin.ImageFileDirectory_v2(data[:8])
        stream = io.BytesIO(data)
        stream.seek(ifd.next)
        ifd.load(stream)
        value = ifd.get(339)  # SampleFormat, one value per channel
        return int(value[0] if isinstance(value, tuple) else value) if value is not None else None
    except Exception:  # a broken header just means "no specific diagnosis"
        return None
