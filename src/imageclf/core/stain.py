"""Stain normalisation (Macenko et al. 2009) to the model's reference stains: a step of the model contract.

Other hospitals stain and scan differently; a model trained on one lab's tiles sees "another lab"
before it sees "another tissue" (``docs/tissue-gate.md``). So every field is mapped to the stains of
the training tiles before the engine runs, on every path, by the two functions here:

1. :func:`estimate_stains` (pixels -> :class:`StainEstimate`), once per image (from its own tissue
   fields) or once per slide (from a sample of its tissue fields): optical density
   OD = -ln((I + 1) / background); pixels with every channel's OD above ``min_od`` are tissue; the
   plane of the two largest eigenvectors of their OD covariance holds both stains; the haematoxylin and
   eosin vectors are the directions at the ``angle_percentile`` and ``100 - angle_percentile``
   percentiles of the angle in that plane; the ``percentile`` of each stain's concentration sets its
   scale. Too few tissue pixels, or two "stains" pointing almost the same way (one stain only), and the
   estimate fails: the fields then keep their colours, and the verdict says so (or, with
   ``on_failure = "refuse"``, they are refused with ``Reason.STAIN``).
2. :func:`normalise` (fields + estimate -> fields): concentrations by least squares under the source
   stains, rescaled to the reference's, re-rendered with the reference stain matrix.

The reference (``StainSpec``: matrix, concentration percentiles, every constant) is config.json's
``stain`` block, fitted on LC25000 grouped TRAIN tiles by ``training.calibration.stain_reference``;
training normalises each tile with these same functions, so training and serving apply one rule.

Why not torchstain's numpy backend: it estimates and applies in one call per image (its split
into "estimate" and "apply" is name-mangled private methods), so a slide could not share one
estimate across lazily read fields, and a failed estimate is an exception from ``eigh`` rather
than an outcome to record. The arithmetic is the same 40 lines of numpy.

Example:
    >>> estimate = estimate_stains(fields, spec)            # fields: N x H x W x 3 uint8, one image
    >>> estimate.status, normalise(fields, estimate, spec).shape
    ('normalised', (N, 224, 224, 3))
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

METHOD = "macenko"
NORMALISED = "normalised"
TOO_LITTLE_TISSUE = "too_little_tissue"
SINGLE_STAIN = "single_stain"
ESTIMATE_PIXELS = 400_000    # pixels the estimate is computed on (a seeded subsample beyond this)

__all__ = ["METHOD", "StainEstimate", "StainSpec", "estimate_stains", "fit_reference", "normalise",
           "normalise_each", "tiles_as_model_input"]


@dataclass(frozen=True)
class StainSpec:
    """config.json's ``stain`` block: the reference stains and every constant of the method.

    ``matrix``: 3 x 2 (rows R, G, B; columns haematoxylin, eosin), unit optical-density vectors.
    ``max_concentrations``: each reference stain's ``percentile`` concentration.
    ``on_failure``: ``"keep"`` (the field keeps its colours; the verdict records it) or ``"refuse"``.
    """

    matrix: tuple[tuple[float, float], tuple[float, float], tuple[float, float]]
    max_concentrations: tuple[float, float]
    method: str = METHOD
    version: int = 1
    percentile: float = 99.0
    background: float = 240.0
    min_od: float = 0.15
    angle_percentile: float = 1.0
    min_pixels: int = 500
    min_angle_deg: float = 5.0
    on_failure: str = "keep"
    fitted_on: str | None = None

    def __post_init__(self) -> None:
        if self.method != METHOD:
            raise ValueError(f"stain method {self.method!r} unknown (this code knows {METHOD!r}).")
        if np.asarray(self.matrix, np.float64).shape != (3, 2) or len(self.max_concentrations) != 2:
            raise ValueError("stain matrix must be 3 x 2 and max_concentrations 2 values.")
        if self.on_failure not in ("keep", "refuse"):
            raise ValueError(f"stain on_failure must be 'keep' or 'refuse', got {self.on_failure!r}.")

    @property
    def reference(self) -> np.ndarray:
        return np.asarray(self.matrix, np.float64)

    def to_dict(self) -> dict[str, Any]:
        data = {"method": self.method, "version": self.version,
                "matrix": [[float(v) for v in row] for row in self.matrix],
                "max_concentrations": [float(v) for v in self.max_concentrations],
                "percentile": self.percentile, "background": self.background, "min_od": self.min_od,
                "angle_percentile": self.angle_percentile, "min_pixels": self.min_pixels,
                "min_angle_deg": self.min_angle_deg, "on_failure": self.on_failure, "fitted_on": self.fitted_on}
        return {key: value for key, value in data.items() if value is not None}


@dataclass(frozen=True, eq=False)
class StainEstimate:
    """One image's (or slide's) stains, estimated once from its tissue; ``status`` says whether it worked."""

    status: str                                   # NORMALISED | TOO_LITTLE_TISSUE | SINGLE_STAIN
    matrix: np.ndarray | None = None              # 3 x 2 source stains (None when the estimate failed)
    max_concentrations: np.ndarray | None = None
    tissue_pixels: int = 0
    angle_deg: float | None = None                # between the two stain vectors

    @property
    def ok(self) -> bool:
        return self.status == NORMALISED

    def to_dict(self) -> dict[str, Any]:
        return {"method": METHOD, "applied": self.ok, "status": self.status, "tissue_pixels": self.tissue_pixels,
                "stain_angle_deg": None if self.angle_deg is None else round(self.angle_deg, 2)}


def optical_density(rgb: np.ndarray, background: float) -> np.ndarray:
    """(N, 3) optical densities of the pixels of ``rgb`` (any shape ending in 3)."""
    return -np.log((rgb.reshape(-1, 3).astype(np.float64) + 1.0) / background)


def _stains(od: np.ndarray, spec: StainSpec) -> StainEstimate:
    return _estimate(od, spec)[0]


def _estimate(od: np.ndarray, spec: StainSpec) -> tuple[StainEstimate, np.ndarray | None]:
    """The estimate and, when it worked, the concentrations of every row of ``od`` under it (computed
    for the percentile anyway; a tile that is its own image reuses them instead of solving again)."""
    tissue = od[np.all(od > spec.min_od, axis=1)]
    if len(tissue) < spec.min_pixels:
        return StainEstimate(TOO_LITTLE_TISSUE, tissue_pixels=len(tissue)), None
    _, vectors = np.linalg.eigh(np.cov(tissue.T))
    plane = vectors[:, [1, 2]]                                   # eigh sorts ascending: the two largest
    plane = plane * np.where(plane.sum(axis=0) < 0, -1.0, 1.0)   # point into positive OD
    t = tissue @ plane
    phi = np.arctan2(t[:, 1], t[:, 0])
    low, high = np.percentile(phi, [spec.angle_percentile, 100 - spec.angle_percentile])
    angle = float(np.degrees(high - low))
    v1 = plane @ np.array([np.cos(low), np.sin(low)])
    v2 = plane @ np.array([np.cos(high), np.sin(high)])
    he = np.stack([v1, v2] if v1[0] > v2[0] else [v2, v1], axis=1)   # haematoxylin absorbs more red
    he = he / np.linalg.norm(he, axis=0, keepdims=True)
    if angle < spec.min_angle_deg:
        return StainEstimate(SINGLE_STAIN, tissue_pixels=len(tissue), angle_deg=angle), None
    concentrations = _concentrations(od, he)
    maxima = np.percentile(concentrations, spec.percentile, axis=1)
    return StainEstimate(NORMALISED, he, maxima, tissue_pixels=len(tissue), angle_deg=angle), concentrations


def _concentrations(od: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(2, N) stain concentrations of OD rows (N, 3) under ``matrix`` (3 x 2), by least squares."""
    return np.linalg.lstsq(matrix, od.T, rcond=None)[0]


def estimate_stains(pixels: np.ndarray, spec: StainSpec, *, max_pixels: int = ESTIMATE_PIXELS,
                    seed: int = 0) -> StainEstimate:
    """The stains of ONE image or slide from its fields (N x H x W x 3 or H x W x 3 uint8), all together
    (a seeded subsample of ``max_pixels`` pixels beyond that, so the cost is bounded)."""
    od = optical_density(np.asarray(pixels), spec.background)
    if len(od) > max_pixels:
        od = od[np.random.default_rng(seed).choice(len(od), max_pixels, replace=False)]
    return _stains(od, spec)


def normalise(fields: np.ndarray, estimate: StainEstimate, spec: StainSpec) -> np.ndarray:
    """``fields`` (N x H x W x 3 uint8) mapped to the reference stains; unchanged when the estimate failed."""
    fields = np.asarray(fields)
    if not estimate.ok:
        return fields
    out = np.empty_like(fields)
    for i, field in enumerate(fields):
        out[i] = _render(_concentrations(optical_density(field, spec.background), estimate.matrix), estimate, spec,
                         field.shape)
    return out


def _render(concentrations: np.ndarray, estimate: StainEstimate, spec: StainSpec, shape: tuple) -> np.ndarray:
    """Source-stain concentrations (2, N) rescaled to the reference's and drawn with the reference stains."""
    scale = np.asarray(spec.max_concentrations) / np.maximum(estimate.max_concentrations, 1e-6)
    rgb = spec.background * np.exp(-(spec.reference @ (concentrations * scale[:, None]))).T - 1.0
    return np.clip(rgb + 0.5, 0, 255).reshape(shape).astype(np.uint8)


def normalise_each(tiles: np.ndarray, spec: StainSpec) -> tuple[np.ndarray, list[str]]:
    """Every tile (N x H x W x 3) as an image of its own (one estimate per tile, as serving does for an
    upload that is one field); also each tile's estimate status. Training normalises its tiles so."""
    out, statuses = np.empty_like(tiles), []
    for i, tile in enumerate(tiles):
        od = optical_density(tile, spec.background)
        if len(od) > ESTIMATE_PIXELS:      # a large tile is estimated on a subsample, then solved in full
            estimate = estimate_stains(tile, spec)
            out[i] = normalise(tile[None], estimate, spec)[0]
        else:                              # the estimate already solved every pixel: reuse it
            estimate, concentrations = _estimate(od, spec)
            out[i] = tile if concentrations is None else _render(concentrations, estimate, spec, tile.shape)
        statuses.append(estimate.status)
    return out, statuses


def tiles_as_model_input(tiles: np.ndarray, spec: StainSpec | None) -> np.ndarray:
    """Tiles sent one field each, as the model takes them: each normalised from itself under ``spec``
    (unchanged for a model without a stain block). What training and evaluation feed the network."""
    return np.asarray(tiles) if spec is None else normalise_each(np.asarray(tiles), spec)[0]


def fit_reference(tiles: np.ndarray, spec: StainSpec) -> tuple[np.ndarray, np.ndarray]:
    """(matrix 3 x 2, max concentrations) of reference tiles: the median over the tiles whose estimate
    works, under ``spec``'s constants (its own matrix is ignored). Raises ValueError when none works."""
    matrices, maxima = [], []
    for tile in tiles:
        estimate = estimate_stains(tile, spec)
        if estimate.ok:
            matrices.append(estimate.matrix)
            maxima.append(estimate.max_concentrations)
    if not matrices:
        raise ValueError("No reference tile has enough stained pixels of two stains to estimate a stain matrix.")
    matrix = np.median(np.stack(matrices), axis=0)
    return matrix / np.linalg.norm(matrix, axis=0, keepdims=True), np.median(np.stack(maxima), axis=0)
