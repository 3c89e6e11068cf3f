"""Per-image Macenko stain normalisation to a reference, in numpy (arm 1 of the tissue gate).

Macenko et al. 2009: optical density OD = -ln((I + 1) / IO); pixels with every channel's OD above
``BETA`` are tissue; the plane of the two largest eigenvectors of their OD covariance holds both
stains; the haematoxylin and eosin vectors are the directions at the 1st and 99th percentiles of
the angle in that plane; concentrations by least squares, scaled so that their 99th percentiles
match the reference's. The stain matrix and the maxima are estimated on all the fields of one image
together (:func:`normalise_image_fields`), so the fields of one slide get one mapping.

Example:
    >>> reference = fit_reference(train_tiles[:100])
    >>> normalised = normalise_image_fields(fields_of_one_image, reference)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imageclf.errors import ModelError

IO = 240.0          # the background intensity: brighter pixels are glass
BETA = 0.15         # least OD in every channel for a pixel to count as tissue
ALPHA = 1.0         # angle percentiles that give the two stain vectors
MIN_PIXELS = 500    # fewer tissue pixels: the image is left as it is


class StainError(ModelError, ValueError):
    """A stain reference that cannot be estimated (no tissue in any reference tile)."""


@dataclass(frozen=True)
class StainReference:
    """The target: stain matrix (3 x 2, columns H and E, unit OD vectors) and 99th-percentile concentrations."""

    matrix: np.ndarray
    max_concentrations: np.ndarray


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) optical densities of the pixels of ``rgb`` (any shape ending in 3)."""
    return -np.log((rgb.reshape(-1, 3).astype(np.float64) + 1.0) / IO)


def stain_matrix(od: np.ndarray) -> np.ndarray | None:
    """The 3 x 2 H&E matrix of tissue pixels' OD (N, 3), or None when there are too few of them."""
    tissue = od[np.all(od > BETA, axis=1)]
    if len(tissue) < MIN_PIXELS:
        return None
    _, vectors = np.linalg.eigh(np.cov(tissue.T))
    plane = vectors[:, [1, 2]]                      # eigh sorts ascending: the two largest
    plane = plane * np.where(plane.sum(axis=0) < 0, -1.0, 1.0)   # point into positive OD
    t = tissue @ plane
    phi = np.arctan2(t[:, 1], t[:, 0])
    low, high = np.percentile(phi, [ALPHA, 100 - ALPHA])
    v1 = plane @ np.array([np.cos(low), np.sin(low)])
    v2 = plane @ np.array([np.cos(high), np.sin(high)])
    he = np.stack([v1, v2] if v1[0] > v2[0] else [v2, v1], axis=1)   # haematoxylin absorbs more red
    return he / np.linalg.norm(he, axis=0, keepdims=True)


def concentrations(od: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(2, N) stain concentrations of OD rows (N, 3) under ``matrix`` (3 x 2), by least squares."""
    return np.linalg.lstsq(matrix, od.T, rcond=None)[0]


def fit_reference(tiles: np.ndarray | list[np.ndarray]) -> StainReference:
    """Median stain matrix and median 99th-percentile concentrations over reference tiles.

    Raises:
        StainError: no tile had enough tissue pixels.
    """
    matrices, maxima = [], []
    for tile in tiles:
        od = optical_density(tile)
        matrix = stain_matrix(od)
        if matrix is None:
            continue
        matrices.append(matrix)
        maxima.append(np.percentile(concentrations(od, matrix), 99, axis=1))
    if not matrices:
        raise StainError("No reference tile has enough stained pixels to estimate a stain matrix.")
    matrix = np.median(np.stack(matrices), axis=0)
    return StainReference(matrix / np.linalg.norm(matrix, axis=0, keepdims=True), np.median(np.stack(maxima), axis=0))


def normalise_image_fields(fields: np.ndarray, reference: StainReference, *, max_pixels: int = 400_000,
                           seed: int = 0) -> np.ndarray:
    """Map every field (N, H, W, 3 uint8) of ONE image to the reference stains, with one estimate
    from all of them (subsampled to ``max_pixels``). Fields with too little tissue come back unchanged."""
    fields = np.asarray(fields)
    od_all = optical_density(fields)
    if len(od_all) > max_pixels:
        od_all = od_all[np.random.default_rng(seed).choice(len(od_all), max_pixels, replace=False)]
    matrix = stain_matrix(od_all)
    if matrix is None:
        return fields.copy()
    scale = reference.max_concentrations / np.maximum(np.percentile(concentrations(od_all, matrix), 99, axis=1), 1e-6)
    out = np.empty_like(fields)
    for i, field in enumerate(fields):
        c = concentrations(optical_density(field), matrix) * scale[:, None]
        rgb = IO * np.exp(-(reference.matrix @ c)).T - 1.0
        out[i] = np.clip(rgb + 0.5, 0, 255).reshape(field.shape).astype(np.uint8)
    return out


def normalise_each(tiles: np.ndarray, reference: StainReference) -> np.ndarray:
    """Every tile (N, H, W, 3) as its own image: one estimate per tile."""
    return np.stack([normalise_image_fields(t[None], reference)[0] for t in tiles]) if len(tiles) else tiles.copy()
