"""Fit the model's reference stains on grouped TRAIN tiles: config.json's ``stain`` block.

The reference is the median Macenko stain matrix and the median 99th-percentile concentrations of a
seeded sample of training tiles (``per_class`` per class), estimated with the serving code itself
(``imageclf.core.stain``), so the block written here is exactly what serving maps every field to.

Example:
    >>> spec = fit_stain_spec(Path("../shared/data/lc25000-lung-224"), Path("training/splits/lc25000-lung-grouped.csv"))
    >>> spec.method, np.asarray(spec.matrix).shape
    ('macenko', (3, 2))
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from imageclf.core import stain
from imageclf.core.imaging import load_model_input
from imageclf.model.config_blocks import parse_block
from training.data.samples import read_manifest

PER_CLASS = 100
# Placeholder reference for the fit itself: fit_reference uses only the spec's constants.
_CONSTANTS = stain.StainSpec(matrix=((1.0, 0.0), (0.0, 1.0), (0.0, 0.0)), max_concentrations=(1.0, 1.0))


def fit_stain_spec(data: Path, manifest: Path, *, per_class: int = PER_CLASS, seed: int = 0,
                   size: tuple[int, int] = (224, 224)) -> stain.StainSpec:
    """The reference stains of ``per_class`` seeded grouped-TRAIN tiles per class."""
    rows = [s for s in read_manifest(manifest) if s.split == "train"]
    rng = np.random.default_rng(seed)
    chosen = []
    for label in sorted({s.label for s in rows}):
        of_class = [s for s in rows if s.label == label]
        chosen += [of_class[i] for i in sorted(rng.choice(len(of_class), per_class, replace=False))]
    tiles = np.stack([load_model_input(data / s.path, size=size) for s in chosen])
    matrix, maxima = stain.fit_reference(tiles, _CONSTANTS)
    return stain.StainSpec(matrix=tuple(tuple(float(v) for v in row) for row in matrix),
                           max_concentrations=tuple(float(v) for v in maxima),
                           fitted_on=f"LC25000 lung grouped TRAIN split, {len(chosen)} tiles ({per_class} per class, "
                                     f"seed {seed}): median stain matrix and median {_CONSTANTS.percentile:g}th-"
                                     "percentile concentrations")


def stain_spec_cached(path: Path, data: Path, manifest: Path) -> stain.StainSpec:
    """The reference in ``path`` (JSON), fitted and written there first when absent."""
    if not path.is_file():
        spec = fit_stain_spec(data, manifest)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(spec.to_dict(), indent=2) + "\n")
    return parse_block("stain", json.loads(path.read_text()))
