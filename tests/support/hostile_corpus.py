"""Hostile and odd image uploads, generated in code (no binary files in the repo).

One function per case; each returns a :class:`Case`: the bytes, the file name an uploader
would use, and the expected outcome: either a user-facing ``ImageError`` message
(``error``, a substring) or an answer, optionally with a check on the decoded pixels.

Cases that test the size limits assume the limits in ``LIMITS`` (small, so the files are
cheap to build); apply them to the process (:func:`with_limits`) or to the Space's environment.

Example:
    >>> case = pdf_renamed_jpg()
    >>> case.filename, case.error
    ('report.jpg', 'PDF document')
    >>> [c.name for c in corpus()][:3]
    ['empty', 'text_renamed_jpg', 'html_renamed_jpg']
"""
from __future__ import annotations

import dataclasses
import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from imageclf import settings

# Limits the size cases are built against (see src/imageclf/core/imaging.py for the variables).
LIMITS: dict[str, int] = {"MAX_IMAGE_PIXELS": 4_000_000, "MAX_IMAGE_BYTES": 3 * 2**20, "MIN_IMAGE_SIDE": 8}


def with_limits(monkeypatch, limits: dict[str, int] | None = None) -> settings.Settings:
    """Make this process's settings carry ``limits`` (env-variable names, default ``LIMITS``)."""
    env = {name: str(value) for name, value in (LIMITS if limits is None else limits).items()}
    parsed = settings.Settings.from_env(env)
    patched = dataclasses.replace(settings.SETTINGS, **{field: getattr(parsed, field)
                                                        for field, name in settings.NUMBERS.items() if name in env})
    monkeypatch.setattr(settings, "SETTINGS", patched)
    return patched


RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
PixelCheck = Callable[[np.ndarray], None]


@dataclass(frozen=True)
class Case:
    """One upload. ``error`` set: refused with that text; else answered (``check`` on the RGB pixels)."""

    name: str
    filename: str
    data: bytes
    error: str | None = None
    check: PixelCheck | None = None


def _pil(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def _cv2(array: np.ndarray, ext: str) -> bytes:
    ok, encoded = cv2.imencode(ext, array)
    assert ok, ext
    return encoded.tobytes()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _raw_png(width: int, height: int, rows: int) -> bytes:
    """An 8-bit gray PNG whose header says ``width x height``; IDAT holds ``rows`` rows of zeros."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * ((width + 1) * rows), 9)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _pattern(height: int = 48, width: int = 64) -> np.ndarray:
    rng = np.random.default_rng(height * 1000 + width)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _near(rgb: np.ndarray, colour: tuple[int, int, int], *, tol: int = 12) -> bool:
    return bool(np.abs(rgb.reshape(-1, 3).astype(int) - colour).max() <= tol)


def _all_near(colour: tuple[int, int, int], *, tol: int) -> PixelCheck:
    def check(rgb: np.ndarray) -> None:
        worst = np.abs(rgb.reshape(-1, 3).astype(int) - colour).max()
        assert worst <= tol, f"pixels differ from {colour} by up to {worst}"
    return check


def _shape(height: int, width: int) -> PixelCheck:
    def check(rgb: np.ndarray) -> None:
        assert rgb.shape == (height, width, 3) and rgb.dtype == np.uint8, rgb.shape
    return check


# ---------------------------------------------------------------- not images
def empty() -> Case:
    return Case("empty", "empty.jpg", b"", error="The file is empty.")


def text_renamed_jpg() -> Case:
    return Case("text_renamed_jpg", "notes.jpg", b"Patient notes\nnothing to see here\n",
                error="This file is text, not an image.")


def html_renamed_jpg() -> Case:
    page = b"<!DOCTYPE html>\n<html><head><title>x</title></head><body><img src=a.jpg></body></html>"
    return Case("html_renamed_jpg", "page.jpg", page, error="web page (HTML)")


def pdf_renamed_jpg() -> Case:
    pdf = b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
    return Case("pdf_renamed_jpg", "report.jpg", pdf, error="PDF document")


def svg_renamed_jpg() -> Case:
    svg = (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
           b'<rect width="64" height="64" fill="red"/></svg>')
    return Case("svg_renamed_jpg", "drawing.jpg", svg, error="SVG drawing")


# ---------------------------------------------------------------- damaged or too big / small
def truncated_jpeg() -> Case:
    data = _cv2(_pattern(96, 128), ".jpg")
    return Case("truncated_jpeg", "cut.jpg", data[: len(data) // 2], error="damaged or incomplete")


def truncated_png() -> Case:
    data = _cv2(_pattern(96, 128), ".png")
    return Case("truncated_png", "cut.png", data[: len(data) // 2], error="damaged or incomplete")


def decompression_bomb_png() -> Case:
    """IHDR declares 50,000 x 50,000 (2.5 G pixels); the file is a few hundred bytes."""
    return Case("decompression_bomb_png", "bomb.png", _raw_png(50_000, 50_000, rows=8),
                error="The image is too large: its header declares 2,500,000,000 pixels")


def over_pixel_limit_png() -> Case:
    """A complete, valid 2,100 x 2,000 PNG (4.2 M pixels > LIMITS) of ~5 KB: refused from its header."""
    return Case("over_pixel_limit_png", "big.png", _raw_png(2_100, 2_000, rows=2_000),
                error="The image is too large (2100 x 2000 px)")


def over_byte_limit_png() -> Case:
    """A valid image (1.2 M pixels) whose file is larger than LIMITS["MAX_IMAGE_BYTES"]."""
    noise = np.random.default_rng(1).integers(0, 256, (1_100, 1_100, 3), dtype=np.uint8)
    data = cv2.imencode(".png", noise, [cv2.IMWRITE_PNG_COMPRESSION, 0])[1].tobytes()
    assert len(data) > LIMITS["MAX_IMAGE_BYTES"]
    return Case("over_byte_limit_png", "huge.png", data, error="The file is too large")


def one_pixel() -> Case:
    return Case("one_pixel", "dot.png", _pil(Image.new("RGB", (1, 1), RED), "PNG"),
                error="The image is too small (1 x 1 px)")


def elongated() -> Case:
    """10 px wide, 20,000 px tall: answered (resized like any other image)."""
    column = np.linspace(0, 255, 20_000).astype(np.uint8)[:, None].repeat(10, axis=1)
    return Case("elongated", "strip.png", _cv2(column, ".png"), check=_shape(20_000, 10))


# ---------------------------------------------------------------- colour modes and bit depths
def grayscale_png() -> Case:
    gray = _pattern()[..., 0]

    def check(rgb: np.ndarray) -> None:
        assert (rgb == gray[..., None]).all()
    return Case("grayscale_png", "gray.png", _cv2(gray, ".png"), check=check)


def rgba_transparent_png() -> Case:
    """Left half opaque red; right half fully transparent (hiding black): must come out white."""
    rgba = np.zeros((32, 64, 4), np.uint8)
    rgba[:, :32] = (*RED, 255)

    def check(rgb: np.ndarray) -> None:
        assert _near(rgb[:, :32], RED, tol=0) and _near(rgb[:, 32:], WHITE, tol=0)
    return Case("rgba_transparent_png", "alpha.png", _pil(Image.fromarray(rgba, "RGBA"), "PNG"), check=check)


def palette_png() -> Case:
    """Palette image; index 2 is transparent (tRNS), so it must show white."""
    indices = np.repeat(np.arange(4, dtype=np.uint8), 16)[None].repeat(16, axis=0)  # 16 x 64
    image = Image.fromarray(indices, "P")
    image.putpalette([*RED, *GREEN, 0, 0, 0, *BLUE] + [0] * (256 - 4) * 3)

    def check(rgb: np.ndarray) -> None:
        for index, colour in enumerate((RED, GREEN, WHITE, BLUE)):
            assert _near(rgb[:, 16 * index:16 * (index + 1)], colour, tol=0), index
    return Case("palette_png", "palette.png", _pil(image, "PNG", transparency=2), check=check)


def png_16bit_gray() -> Case:
    gray = np.linspace(0, 65535, 48 * 64).astype(np.uint16).reshape(48, 64)

    def check(rgb: np.ndarray) -> None:
        assert (rgb[..., 1].astype(int) == gray // 257).all()
    return Case("png_16bit_gray", "gray16.png", _cv2(gray, ".png"), check=check)


def png_16bit_rgb() -> Case:
    rgb16 = _pattern().astype(np.uint16) * 257  # 8-bit values spread to the full 16-bit range
    return Case("png_16bit_rgb", "rgb16.png", _cv2(rgb16[..., ::-1], ".png"),
                check=lambda rgb: np.testing.assert_array_equal(rgb, _pattern()))


def tiff_16bit_rgb() -> Case:
    rgb16 = _pattern().astype(np.uint16) * 257
    return Case("tiff_16bit_rgb", "rgb16.tif", _cv2(rgb16[..., ::-1], ".tiff"),
                check=lambda rgb: np.testing.assert_array_equal(rgb, _pattern()))


def cmyk_jpeg() -> Case:
    image = Image.new("CMYK", (64, 48), (0, 255, 255, 0))  # no cyan, full magenta + yellow: red
    return Case("cmyk_jpeg", "print.jpg", _pil(image, "JPEG", quality=95), check=_all_near(RED, tol=12))


def exif_rotated_jpeg() -> Case:
    """Stored 64 wide x 32 tall, left red / right blue, EXIF orientation 6 (rotate 90 deg clockwise).

    Honoured: 32 wide x 64 tall with red on top and blue below. Ignored: 64 x 32, red on the left.
    """
    stored = np.zeros((32, 64, 3), np.uint8)
    stored[:, :32], stored[:, 32:] = RED, BLUE
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _pil(Image.fromarray(stored), "JPEG", quality=95, exif=exif.tobytes())

    def check(rgb: np.ndarray) -> None:
        assert rgb.shape == (64, 32, 3), rgb.shape
        assert _near(rgb[:24], RED, tol=40) and _near(rgb[40:], BLUE, tol=40)
        np.testing.assert_allclose(rgb, np.rot90(_decoded_plain(data), k=-1), atol=0)
    return Case("exif_rotated_jpeg", "rotated.jpg", data, check=check)


def animated_gif() -> Case:
    frames = [Image.new("RGB", (48, 32), colour).convert("P") for colour in (RED, BLUE, GREEN)]
    data = _pil(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return Case("animated_gif", "anim.gif", data, check=_all_near(RED, tol=0))  # the first frame


def multipage_tiff() -> Case:
    pages = [Image.new("RGB", (40, 30), colour) for colour in (GREEN, BLUE)]
    data = _pil(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    return Case("multipage_tiff", "stack.tif", data, check=_all_near(GREEN, tol=0))  # the first page


def webp() -> Case:
    data = _pil(Image.fromarray(_pattern()), "WEBP", lossless=True)
    return Case("webp", "tile.webp", data, check=lambda rgb: np.testing.assert_array_equal(rgb, _pattern()))


def float32_gray_tiff() -> Case:
    """Single-channel float TIFF, values 0..1: read, scaled to 0..255."""
    values = np.linspace(0, 1, 32 * 48, dtype=np.float32).reshape(32, 48)

    def check(rgb: np.ndarray) -> None:
        assert np.abs(rgb[..., 0].astype(int) - np.round(values * 255)).max() <= 1
    return Case("float32_gray_tiff", "float.tif", _pil(Image.fromarray(values, "F"), "TIFF"), check=check)


def float32_rgb_tiff() -> Case:
    """Three-channel float TIFF: Pillow has no such mode, so a clear message."""
    values = np.random.default_rng(2).random((32, 48, 3), dtype=np.float32)
    return Case("float32_rgb_tiff", "float_rgb.tif", _cv2(values, ".tiff"),
                error="This TIFF file stores floating-point colour")


def _decoded_plain(data: bytes) -> np.ndarray:
    """The stored pixels, ignoring EXIF (to compare with the rotated decode)."""
    with Image.open(io.BytesIO(data)) as image:
        return np.array(image.convert("RGB"))


CASES: tuple[Callable[[], Case], ...] = (
    empty, text_renamed_jpg, html_renamed_jpg, pdf_renamed_jpg, svg_renamed_jpg,
    truncated_jpeg, truncated_png, decompression_bomb_png, over_pixel_limit_png, over_byte_limit_png,
    one_pixel, elongated, grayscale_png, rgba_transparent_png, palette_png, png_16bit_gray,
    png_16bit_rgb, tiff_16bit_rgb, cmyk_jpeg, exif_rotated_jpeg, animated_gif, multipage_tiff,
    webp, float32_gray_tiff, float32_rgb_tiff,
)


def corpus() -> list[Case]:
    """Every case, built now (a few MB in memory at most)."""
    return [make() for make in CASES]
