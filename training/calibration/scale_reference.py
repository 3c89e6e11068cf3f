"""Measure the training tiles' nucleus scale: the ``scale`` block of config.json.

The Space brings every upload to the training scale by matching its scale-space curve
(``src/imageclf/core/scale.py``) against reference curves. They are measured here, with the same code, on
TRAIN-split tiles at their own size (zoom 1) and on mosaics of same-class, same-split tiles
shrunk 1.19x-4.76x (zoom-outs carry the blur small nuclei get, so they need their own
templates). Test-split mosaics then check the estimate without leakage (:func:`zoom_out_check`).

Example:
    >>> tiles = split_tiles(data_root, manifest, split="train")
    >>> spec = build_scale_spec(tiles, field_of_view_px=768, seed=0)
    >>> spec.reference.diameter_px          # median, p10, p90 in model-input pixels
    (10.4, 8.9, 12.5)

CLI (prints the zoom-out check on the test split):
    python -m training.calibration.scale_reference --data ../shared/data/lc25000-lung-224 \
        --manifest training/splits/lc25000-lung-grouped.csv --model-dir hub_model
"""
from __future__ import annotations

import argparse
import json
import math
import random
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from imageclf.core.imaging import decode_image
from imageclf.core.scale import NucleusReference, ScaleSpec
from imageclf.model.config import SCHEMA_VERSION, read_config, write_config
from imageclf.core.scale import ESTIMATOR, SIGMAS, STEPS_PER_OCTAVE, energy_curve, estimate_relative_size
from training.data.samples import read_manifest

ZOOM_FACTORS = tuple(2 ** (i / STEPS_PER_OCTAVE) for i in range(10))   # 1 .. 4.76
MOSAICS_PER_ZOOM = 150
SPREAD_TILES = 120
LC25000_NOTE = ("LC25000 publishes no magnification or pixel size; its 224 px tiles are 768 px "
                "photographs shrunk 3.43x, so only the relative (nucleus-size) scale is known.")


def split_tiles(root: str | Path, manifest: str | Path, *, split: str) -> dict[str, list[Path]]:
    """Tile paths of one split, by class (from a split manifest)."""
    return tiles_by_class([s for s in read_manifest(manifest) if s.split == split], root=root)


def tiles_by_class(samples, *, root: str | Path) -> dict[str, list[Path]]:
    """Paths of manifest samples grouped by class label."""
    by_class: dict[str, list[Path]] = defaultdict(list)
    for sample in samples:
        by_class[sample.label].append(Path(root) / sample.path)
    return dict(by_class)


def zoom_out(tiles: dict[str, list[Path]], zoom: float, rng: random.Random, *, side: int = 224,
             out_side: int = 224) -> np.ndarray:
    """An ``out_side`` px image of same-class ``side`` px tiles seen ``zoom`` times smaller
    (a mosaic of randomly drawn tiles, then shrunk with area averaging)."""
    paths = tiles[rng.choice(sorted(tiles))]
    count = math.ceil(zoom * out_side / side)
    picks = rng.sample(paths, count * count)
    rows = [np.concatenate([_read(picks[r * count + c], side) for c in range(count)], axis=1)
            for r in range(count)]
    span = round(out_side * zoom)
    mosaic = np.concatenate(rows, axis=0)[:span, :span]
    return mosaic if mosaic.shape[0] == out_side else cv2.resize(mosaic, (out_side, out_side),
                                                                 interpolation=cv2.INTER_AREA)


def build_scale_spec(tiles: dict[str, list[Path]], *, field_of_view_px: int | None, seed: int = 0,
                     mosaics: int = MOSAICS_PER_ZOOM, microns_per_pixel: float | None = None,
                     note: str | None = LC25000_NOTE) -> ScaleSpec:
    """Reference curves at each zoom factor plus the nucleus diameter distribution."""
    rng = random.Random(seed)
    curves = []
    for zoom in ZOOM_FACTORS:
        samples = np.stack([energy_curve(zoom_out(tiles, zoom, rng)) for _ in range(mosaics)])
        curves.append(np.nanmedian(samples, axis=0))
    peak_diameter = _peak_diameter(curves[0])
    provisional = NucleusReference(sigmas=SIGMAS, zoom_factors=ZOOM_FACTORS,
                                   curves=tuple(tuple(map(float, c)) for c in curves),
                                   diameter_px=(peak_diameter,) * 3, tiles=0, estimator=ESTIMATOR)
    # Spread: the same estimator on single training tiles (relative size x reference diameter).
    singles = [zoom_out(tiles, 1.0, rng) for _ in range(SPREAD_TILES)]
    sizes = np.array([estimate_relative_size(tile, provisional)[0] or np.nan for tile in singles])
    diameters = peak_diameter * sizes[np.isfinite(sizes)]
    p10, p90 = (float(v) for v in np.percentile(diameters, [10, 90]))
    reference = NucleusReference(sigmas=SIGMAS, zoom_factors=ZOOM_FACTORS,
                                 curves=provisional.curves, diameter_px=(round(peak_diameter, 3), round(p10, 3),
                                                                         round(p90, 3)),
                                 tiles=mosaics * len(ZOOM_FACTORS) + SPREAD_TILES, estimator=ESTIMATOR)
    return ScaleSpec(field_of_view_px=field_of_view_px, microns_per_pixel=microns_per_pixel,
                     microns_per_pixel_note=None if microns_per_pixel else note, reference=reference)


def train_scale_reference(data: str | Path, manifest: str | Path) -> NucleusReference:
    """The nucleus-scale reference of the TRAIN tiles, as the exported model's config carries it
    (what the stress suite and the transfer recipe bring external images to)."""
    return build_scale_spec(split_tiles(data, manifest, split="train"), field_of_view_px=None, mosaics=12).reference


def zoom_out_check(spec: ScaleSpec, tiles: dict[str, list[Path]], *, zooms=(2.0, 3.0, 4.0), per_zoom: int = 60,
                   out_side: int = 224, seed: int = 1, tolerance: float = 0.25) -> dict[str, dict[str, float]]:
    """Share of synthetic zoom-outs whose resampling factor is found within ``tolerance``."""
    rng = random.Random(seed)
    report = {}
    for zoom in zooms:
        found = []
        for _ in range(per_zoom):
            relative, _ = estimate_relative_size(zoom_out(tiles, zoom, rng, out_side=out_side), spec.reference)
            found.append(np.nan if relative is None else 1.0 / relative)
        errors = np.asarray(found) / zoom - 1.0
        report[f"{zoom:g}x"] = {"within": float(np.mean(np.abs(errors) <= tolerance)),
                                "median_error": float(np.nanmedian(errors)), "n": per_zoom}
    return report


def _peak_diameter(curve: np.ndarray) -> float:
    """Nucleus diameter at the curve's peak: a blob of radius r responds most at sigma = r / sqrt(2)."""
    index = int(np.nanargmax(curve))
    offset = 0.0
    if 0 < index < len(curve) - 1:
        a, b, c = curve[index - 1:index + 2]
        if a - 2 * b + c < 0:
            offset = 0.5 * (a - c) / (a - 2 * b + c)
    sigma = SIGMAS[0] * 2 ** ((index + offset) / STEPS_PER_OCTAVE)
    return float(2 * math.sqrt(2) * sigma)


def _read(path: Path, side: int) -> np.ndarray:
    rgb = decode_image(path)
    return rgb if rgb.shape[:2] == (side, side) else cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--field-of-view-px", type=int, default=768)
    parser.add_argument("--model-dir", help="write the scale block into this model folder's config.json")
    args = parser.parse_args(argv)
    spec = build_scale_spec(split_tiles(args.data, args.manifest, split="train"),
                            field_of_view_px=args.field_of_view_px)
    print("reference nucleus diameter (median, p10, p90):", spec.reference.diameter_px)
    check = zoom_out_check(spec, split_tiles(args.data, args.manifest, split="test"))
    print(json.dumps(check, indent=2))
    if args.model_dir:
        config = read_config(args.model_dir)
        write_config(args.model_dir, replace(config, schema_version=SCHEMA_VERSION, scale=spec))
        print(f"scale block written to {Path(args.model_dir) / 'config.json'}")


if __name__ == "__main__":
    main()
