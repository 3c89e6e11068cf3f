"""Shifts between labs, in numpy: stain, scale, blur, JPEG and noise, for training and stress tests.

Each function takes and returns RGB ``uint8`` tiles and draws its randomness from a
``numpy.random.Generator``, so a cached augmented copy can be re-made exactly from its seed.

- Stain: HED stain-vector perturbation at the magnitudes of Tellez et al. 2018
  (per stain, concentration x U(0.95, 1.05) + U(-0.05, 0.05)), then brightness, contrast and
  saturation jitter; Reinhard colour transfer (LAB mean/std) towards another lab's palette.
- Heavy stain (policy "heavy", for partial fine-tuning, issue 20 arm 5): a random LAB-statistics
  transfer (each channel's mean shifted and spread scaled around the tile's own, no external
  palette), then HED perturbation at three times Tellez's magnitude, then stronger jitter.
- Scale: zoom-out mosaics (k x k tiles of the same class and split, shrunk back to one tile:
  tissue seen at 1/k magnification, no group leaks) and zoom-in (centre crop, upscaled).
- Scanner and file: Gaussian blur, JPEG re-compression, sensor noise.

Example:
    >>> rng = np.random.default_rng(0)
    >>> augmented = augment(tile, policy="all", rng=rng, pool=same_class_train_tiles)
"""
from __future__ import annotations

import cv2
import numpy as np

from imageclf.core.scale import RGB_FROM_HED as _RUIFROK

# Ruifrok & Johnston stain vectors (rows: haematoxylin, eosin, DAB), normalised per stain.
RGB_FROM_HED = _RUIFROK / np.linalg.norm(_RUIFROK, axis=1, keepdims=True)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)
POLICIES = ("none", "stain", "scale", "all", "heavy")


def hed_perturb(tile: np.ndarray, rng: np.random.Generator, *, sigma: float = 0.05, bias: float = 0.05) -> np.ndarray:
    """Scale each stain's concentration by U(1-sigma, 1+sigma) and shift it by U(-bias, bias).

    Example:
        >>> hed_perturb(tile, np.random.default_rng(0)).shape == tile.shape
        True
    """
    od = -np.log((tile.astype(np.float32) + 1.0) / 256.0)
    hed = od @ HED_FROM_RGB
    hed = hed * rng.uniform(1 - sigma, 1 + sigma, 3) + rng.uniform(-bias, bias, 3)
    rgb = np.exp(-(hed @ RGB_FROM_HED)) * 256.0 - 1.0
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def colour_jitter(tile: np.ndarray, rng: np.random.Generator, *, brightness: float = 0.08,
                  contrast: float = 0.15, saturation: float = 0.15) -> np.ndarray:
    """Brightness shift (share of 255), contrast and saturation scale by 1 +- the given amounts."""
    x = tile.astype(np.float32) + rng.uniform(-brightness, brightness) * 255.0
    x = (x - x.mean()) * rng.uniform(1 - contrast, 1 + contrast) + x.mean()
    grey = x.mean(axis=2, keepdims=True)
    x = (x - grey) * rng.uniform(1 - saturation, 1 + saturation) + grey
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def mosaic(tiles: list[np.ndarray]) -> np.ndarray:
    """k x k tiles (k*k of them, row-major) side by side, shrunk to one tile: a 1/k zoom-out.

    Example:
        >>> mosaic([tile] * 4).shape == tile.shape
        True
    """
    k = int(round(len(tiles) ** 0.5))
    if k * k != len(tiles):
        raise ValueError(f"A mosaic needs a square number of tiles, got {len(tiles)}.")
    h, w = tiles[0].shape[:2]
    grid = np.concatenate([np.concatenate(tiles[r * k:(r + 1) * k], axis=1) for r in range(k)], axis=0)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_AREA)


def zoom_in(tile: np.ndarray, factor: float) -> np.ndarray:
    """Centre crop of 1/factor of the side, upscaled back to the tile size (a ``factor`` x zoom-in)."""
    h, w = tile.shape[:2]
    ch, cw = int(round(h / factor)), int(round(w / factor))
    top, left = (h - ch) // 2, (w - cw) // 2
    return cv2.resize(tile[top:top + ch, left:left + cw], (w, h), interpolation=cv2.INTER_CUBIC)


def blur(tile: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur (an out-of-focus scan)."""
    return cv2.GaussianBlur(tile, (0, 0), sigmaX=sigma)


def jpeg(tile: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode as JPEG at ``quality`` (what a chat app or slide export does)."""
    ok, data = cv2.imencode(".jpg", tile[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1].copy()


def noise(tile: np.ndarray, rng: np.random.Generator, *, sigma: float) -> np.ndarray:
    """Additive Gaussian sensor noise, ``sigma`` in grey levels."""
    return np.clip(tile + rng.normal(0.0, sigma, tile.shape) + 0.5, 0, 255).astype(np.uint8)


def lab_stats(images: np.ndarray | list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the LAB channels (OpenCV 8-bit LAB), pooled over ``images``' pixels."""
    lab = np.concatenate([cv2.cvtColor(np.ascontiguousarray(im), cv2.COLOR_RGB2LAB).reshape(-1, 3)
                          for im in images]).astype(np.float64)
    return lab.mean(axis=0), lab.std(axis=0) + 1e-6


def reinhard(tile: np.ndarray, target_mean: np.ndarray, target_std: np.ndarray) -> np.ndarray:
    """Reinhard colour transfer: match the tile's LAB mean/std to a target palette's.

    Example:
        >>> restained = reinhard(tile, *lab_stats(tcga_fields))
    """
    lab = cv2.cvtColor(tile, cv2.COLOR_RGB2LAB).astype(np.float64)
    mean, std = lab.reshape(-1, 3).mean(axis=0), lab.reshape(-1, 3).std(axis=0) + 1e-6
    lab = (lab - mean) / std * target_std + target_mean
    return cv2.cvtColor(np.clip(lab + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def stain_shift(tile: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """HED perturbation then colour jitter (the 'stain' policy)."""
    return colour_jitter(hed_perturb(tile, rng), rng)


def random_lab_transfer(tile: np.ndarray, rng: np.random.Generator, *, shift: tuple = (10.0, 8.0, 8.0),
                        spread: float = 0.2) -> np.ndarray:
    """Reinhard transfer towards a random palette: LAB means moved by N(0, ``shift``), spreads scaled
    by exp(N(0, ``spread``)). Drawn around the tile itself, so no other lab's palette is fitted on."""
    lab = cv2.cvtColor(tile, cv2.COLOR_RGB2LAB).astype(np.float64).reshape(-1, 3)
    mean, std = lab.mean(axis=0), lab.std(axis=0) + 1e-6
    target_mean = mean + rng.normal(0.0, shift)
    target_std = std * np.exp(rng.normal(0.0, spread, 3))
    return reinhard(tile, target_mean, target_std)


def heavy_stain_shift(tile: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random LAB transfer, HED perturbation (sigma 0.15, bias 0.15), stronger colour jitter."""
    out = random_lab_transfer(tile, rng)
    out = hed_perturb(out, rng, sigma=0.15, bias=0.15)
    return colour_jitter(out, rng, brightness=0.12, contrast=0.3, saturation=0.35)


def scale_shift(tile: np.ndarray, rng: np.random.Generator, pool: np.ndarray) -> np.ndarray:
    """Zoom out (2x2 or 3x3 mosaic of ``tile`` and tiles drawn from ``pool``) or zoom in 1.5-2x."""
    if rng.random() < 0.6:
        k = int(rng.choice([2, 3]))
        others = [pool[i] for i in rng.integers(0, len(pool), k * k - 1)]
        tiles = [tile, *others]
        order = rng.permutation(len(tiles))
        return mosaic([tiles[i] for i in order])
    return zoom_in(tile, float(rng.uniform(1.5, 2.0)))


def degrade(tile: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One or more of blur (sigma 0.5-1.5), JPEG (quality 30-70) and noise (sigma 2-8)."""
    steps = rng.random(3) < 0.5
    if not steps.any():
        steps[rng.integers(0, 3)] = True
    if steps[0]:
        tile = blur(tile, float(rng.uniform(0.5, 1.5)))
    if steps[2]:
        tile = noise(tile, rng, sigma=float(rng.uniform(2.0, 8.0)))
    if steps[1]:
        tile = jpeg(tile, int(rng.integers(30, 71)))
    return tile


def augment(tile: np.ndarray, *, policy: str, rng: np.random.Generator, pool: np.ndarray | None = None) -> np.ndarray:
    """One augmented copy under ``policy``: "none", "stain", "scale" (stain + scale), "all" or "heavy".

    ``pool`` holds tiles of the same class and split as ``tile`` (for zoom-out mosaics).
    "all" is scale with probability 1/2, stain, then :func:`degrade`; "heavy" is the same with
    :func:`heavy_stain_shift` in place of the stain step.
    """
    if policy not in POLICIES:
        raise ValueError(f"Unknown policy {policy!r}; choose from {POLICIES}")
    if policy == "none":
        return tile
    needs_pool = policy in ("scale", "all", "heavy")
    if needs_pool and (pool is None or len(pool) == 0):
        raise ValueError(f"Policy {policy!r} needs a pool of same-class, same-split tiles.")
    out = tile
    if policy == "scale" or (policy in ("all", "heavy") and rng.random() < 0.5):
        out = scale_shift(out, rng, pool)
    # after the mosaic, so the whole field shares one stain
    out = heavy_stain_shift(out, rng) if policy == "heavy" else stain_shift(out, rng)
    if policy in ("all", "heavy"):
        out = degrade(out, rng)
    return out
