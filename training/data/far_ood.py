"""Far out-of-distribution images for measuring the abstention rule: nothing here is tissue.

Every image is generated in code from a fixed seed: noise, blank and solid fields, gradients,
smooth colour blobs, checkerboards, stripes, text, and synthetic outdoor scenes (sky, ridge,
textured ground, sun, buildings and trees) standing in for natural photographs. Nothing is read
from installed packages: sample photos shipped inside a library (matplotlib's, Gradio's) change or
vanish with a library upgrade, and the far-OOD figures of a model (its card's out-of-domain
table) would then change with them. With the generators here the same seed gives the same images
on any machine. Nothing is downloaded. Every image is RGB ``uint8`` of one ``size``.

Example:
    >>> sets = make_far_ood_set(20, size=(224, 224), seed=0)
    >>> sorted(sets)[:3], sets["blank_white"].shape
    (['blank_black', 'blank_white', 'checkerboard'], (20, 224, 224, 3))
    >>> sets |= other_stain_variants(real_tiles[:20], seed=0)       # grey, inverted, IHC-like...
    >>> sets |= shared_dataset_images("../shared/data/chest-ct", 20, kind="ct")
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from imageclf.core.imaging import IMAGE_SUFFIXES, load_model_input
from imageclf.core.scale import RGB_FROM_HED

WORDS = ("specimen", "report", "patient", "slide", "invoice", "hello world", "2024-05-01", "TOTAL 42.00")
# Ruifrok & Johnston stain vectors (optical density per R, G, B): hematoxylin, eosin, DAB.
HEMATOXYLIN, EOSIN, DAB = RGB_FROM_HED
# Scene colours (RGB), kept away from the pink-purple of H&E: skies (zenith, horizon), grounds, walls.
SKIES = (((70, 130, 220), (180, 210, 240)), ((110, 150, 200), (210, 220, 230)), ((40, 80, 160), (150, 190, 230)))
GROUNDS = ((70, 120, 50), (120, 150, 60), (150, 130, 90), (110, 110, 105), (40, 90, 140))
BUILDINGS = ((160, 160, 155), (120, 90, 60), (200, 190, 170), (60, 60, 70))


def _solid(rng, n, size):
    return np.broadcast_to(rng.integers(0, 256, (n, 1, 1, 3), dtype=np.uint8), (n, *size, 3)).copy()


def _gradient(rng, n, size):
    h, w = size
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        t = np.clip((np.cos(angle) * xx + np.sin(angle) * yy + 1) / 2, 0, 1)[..., None]
        a, b = rng.integers(0, 256, (2, 3))
        out[i] = (a * (1 - t) + b * t).astype(np.uint8)
    return out


def _pattern(rng, n, size, *, stripes: bool):
    h, w = size
    out = np.empty((n, h, w, 3), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        period = int(rng.integers(4, 48))
        a, b = rng.integers(0, 256, (2, 3))
        mask = (xx // period) % 2 if stripes else ((xx // period) + (yy // period)) % 2
        if stripes and rng.random() < 0.5:
            mask = (yy // period) % 2
        out[i] = np.where(mask[..., None] == 1, a, b).astype(np.uint8)
    return out


def _text(rng, n, size):
    h, w = size
    out = np.full((n, h, w, 3), 255, np.uint8)
    fonts = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_PLAIN)
    for i in range(n):
        colour = tuple(int(c) for c in rng.integers(0, 160, 3))
        for line in range(int(rng.integers(2, 7))):
            y = int(20 + line * h / 7)
            word = str(rng.choice(WORDS))
            cv2.putText(out[i], word, (int(rng.integers(0, w // 4)), y), int(rng.choice(fonts)),
                        float(rng.uniform(0.5, 1.1)), colour, int(rng.integers(1, 3)), cv2.LINE_AA)
    return out


def _blobs(rng, n, size):
    """Smooth random colour fields: low-frequency noise scaled up."""
    h, w = size
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        cells = int(rng.integers(3, 12))
        small = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
        out[i] = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return out


def _ridge(rng, h: int, w: int) -> np.ndarray:
    """Row of a hill line in each of ``w`` columns: a smoothed random walk around a random horizon."""
    walk = np.cumsum(rng.normal(0, 1, w + 16))
    walk = np.convolve(walk - walk.mean(), np.ones(17) / 17, mode="valid")  # w values
    return rng.uniform(0.35, 0.7) * h - rng.uniform(0.02, 0.15) * h * walk / (np.abs(walk).max() + 1e-9)


def _scene(rng, n, size):
    """Outdoor-like scenes: a sky gradient, a ridge line, textured ground, a sun, buildings and trees."""
    h, w = size
    out = np.empty((n, h, w, 3), np.uint8)
    rows = np.linspace(0.0, 1.0, h)[:, None, None]
    for i in range(n):
        zenith, horizon = np.array(SKIES[rng.integers(len(SKIES))], np.float64)
        sky = zenith * (1 - rows) + horizon * rows
        small = rng.normal(0, 1, (max(2, h // 16), max(2, w // 16))).astype(np.float32)
        texture = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)[..., None]
        ground = np.array(GROUNDS[rng.integers(len(GROUNDS))], np.float64) * (1 + 0.15 * texture)
        below = (np.arange(h)[:, None] > _ridge(rng, h, w)[None, :])[..., None]
        image = np.ascontiguousarray(np.clip(np.where(below, ground, sky), 0, 255).astype(np.uint8))
        sun = (int(rng.integers(0, w)), int(rng.uniform(0.05, 0.3) * h))
        cv2.circle(image, sun, max(1, int(rng.uniform(0.03, 0.08) * w)), (255, 245, 200), -1, cv2.LINE_AA)
        for _ in range(int(rng.integers(1, 6))):
            x, base = int(rng.integers(0, w)), int(rng.uniform(0.6, 1.0) * h)
            width, height = max(2, int(rng.uniform(0.05, 0.2) * w)), max(2, int(rng.uniform(0.1, 0.4) * h))
            if rng.random() < 0.5:  # a building
                wall = tuple(int(c) for c in BUILDINGS[rng.integers(len(BUILDINGS))])
                cv2.rectangle(image, (x, base - height), (x + width, base), wall, -1)
            else:  # a tree: trunk, then crown
                cv2.rectangle(image, (x, base - height // 2), (x + width // 5, base), (90, 60, 30), -1)
                cv2.circle(image, (x + width // 10, base - height // 2), width // 2, (40, 110, 40), -1, cv2.LINE_AA)
        out[i] = cv2.GaussianBlur(image, (3, 3), 0.8)
    return out


def make_far_ood_set(n_per_kind: int, *, size: tuple[int, int] = (224, 224), seed: int = 0) -> dict[str, np.ndarray]:
    """``n_per_kind`` generated images of each far-OOD kind, keyed by kind name.

    Kinds: uniform and gaussian noise, blank white/black, solid colours, gradients, smooth
    colour blobs, checkerboards, stripes, text on white, and synthetic outdoor scenes.
    """
    rng = np.random.default_rng(seed)
    n, shape = n_per_kind, (n_per_kind, *size, 3)
    mean = rng.integers(40, 216, (n, 1, 1, 3))
    gaussian = mean + rng.normal(0, rng.uniform(20, 70, (n, 1, 1, 1)), shape)
    sets = {
        "uniform_noise": rng.integers(0, 256, shape, dtype=np.uint8),
        "gaussian_noise": np.clip(gaussian, 0, 255).astype(np.uint8),
        "blank_white": np.full(shape, 255, np.uint8),
        "blank_black": np.zeros(shape, np.uint8),
        "solid_colour": _solid(rng, n, size),
        "gradient": _gradient(rng, n, size),
        "colour_blobs": _blobs(rng, n, size),
        "checkerboard": _pattern(rng, n, size, stripes=False),
        "stripes": _pattern(rng, n, size, stripes=True),
        "text": _text(rng, n, size),
    }
    sets["scene"] = _scene(rng, n, size)  # drawn last: the kinds above keep their earlier images
    return sets


def _to_optical_density(rgb: np.ndarray) -> np.ndarray:
    return -np.log(np.clip(rgb.astype(np.float64), 1, 255) / 255.0)


def _from_optical_density(od: np.ndarray) -> np.ndarray:
    return np.clip(255.0 * np.exp(-od), 0, 255).round().astype(np.uint8)


def ihc_like(rgb: np.ndarray) -> np.ndarray:
    """Recolour an H&E tile as hematoxylin (blue) + DAB (brown), like an IHC slide.

    Colour deconvolution (Ruifrok & Johnston) splits the tile into stain amounts; the eosin
    amount is then re-drawn with the DAB vector.
    """
    stains = np.stack([v / np.linalg.norm(v) for v in (HEMATOXYLIN, EOSIN, DAB)])
    amounts = _to_optical_density(rgb).reshape(-1, 3) @ np.linalg.inv(stains)
    amounts = np.clip(amounts, 0, None)
    amounts[:, 2] = amounts[:, 1] * 1.5  # eosin -> DAB
    od = amounts[:, 0:1] * stains[0] + amounts[:, 2:3] * stains[2]
    return _from_optical_density(od.reshape(rgb.shape))


def hue_rotated(rgb: np.ndarray, degrees: float) -> np.ndarray:
    """The same tile with every hue turned by ``degrees`` (e.g. a green/yellow 'stain')."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + int(round(degrees / 2))) % 180).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def other_stain_variants(tiles: np.ndarray, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Real tiles turned into 'other stain' look-alikes: harder, nearer OOD than generated kinds.

    Keys: ``stain_greyscale``, ``stain_inverted``, ``stain_ihc_dab``, ``stain_hue_rotated``.
    """
    rng = np.random.default_rng(seed)
    grey = np.stack([np.repeat(cv2.cvtColor(t, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=-1) for t in tiles])
    return {
        "stain_greyscale": grey,
        "stain_inverted": 255 - np.asarray(tiles),
        "stain_ihc_dab": np.stack([ihc_like(t) for t in tiles]),
        "stain_hue_rotated": np.stack([hue_rotated(t, rng.uniform(90, 270)) for t in tiles]),
    }


def shared_dataset_images(root: str | Path, n: int, *, kind: str, size: tuple[int, int] = (224, 224),
                          seed: int = 0) -> dict[str, np.ndarray]:
    """``n`` images spread over another dataset (e.g. CT slices, dermoscopy) as one kind.

    Returns ``{}`` when the folder is absent, so callers can offer whatever is installed.
    """
    root = Path(root)
    if not root.is_dir():
        return {}
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        return {}
    chosen = np.random.default_rng(seed).choice(len(files), size=min(n, len(files)), replace=False)
    return {kind: np.stack([load_model_input(files[i], size=size) for i in sorted(chosen)])}
