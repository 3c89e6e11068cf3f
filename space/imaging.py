"""Image decoding shared by the Space and the training code.

The model's contract: it takes RGB ``uint8`` pixels of the size named in
``config.json`` (``input_size``); scaling to floats happens inside the model.
This module is the single place that turns a file or an array into that input,
so training and serving cannot drift apart.

Example:
    >>> rgb = decode_image("tile.jpeg")          # H x W x 3 uint8, RGB
    >>> x = to_model_input(rgb, size=(224, 224))  # 224 x 224 x 3 uint8
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

# Refuse absurd images before decoding them fully (decompression bombs).
MAX_PIXELS = int(os.environ.get("MAX_IMAGE_PIXELS", 64_000_000))


class ImageError(ValueError):
    """An input that cannot be turned into an RGB image; the message is for people."""


def decode_image(source: str | os.PathLike | bytes) -> np.ndarray:
    """Decode a file path or encoded bytes into an H x W x 3 RGB ``uint8`` array.

    EXIF orientation is honoured (OpenCV applies it when decoding colour images).

    Raises:
        ImageError: missing, empty, unreadable or oversized input.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"File not found: {path}")
        data = path.read_bytes()
    else:
        data = bytes(source)
    if not data:
        raise ImageError("The file is empty.")
    buf = np.frombuffer(data, dtype=np.uint8)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageError("This file is not an image that can be read (JPEG, PNG, TIFF, WebP, BMP).")
    if bgr.shape[0] * bgr.shape[1] > MAX_PIXELS:
        raise ImageError(f"Image is too large ({bgr.shape[1]} x {bgr.shape[0]} px).")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


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
