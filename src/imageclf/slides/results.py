"""The typed values a scored slide is made of: the model as scoring sees it, the field table, the results.

Pure data (numpy arrays and dataclasses): :mod:`imageclf.slides.scoring` makes them,
:mod:`imageclf.slides.writers` and :mod:`imageclf.slides.heatmap` present them.

Example:
    >>> model = SlideModel.from_folder("hub_model")
    >>> model.mpp, model.mpp_source
    (0.368, 'estimate: model_scale.json (median over 44 MoNuSeg tiles at 0.25 um/px)')
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imageclf.core.engine import FieldEngine
from imageclf.core.refusal import Reason, Refusal
from imageclf.core.spec import ClassifierSpec
from imageclf.core.verdict import ImageAnalysis
from imageclf.hashing import file_sha256
from imageclf.model.config import ModelConfig
from imageclf.model.predictor import Predictor
from imageclf.slides.physical import SlideScale, model_mpp
from imageclf.slides.reader import SlideError
from imageclf.slides.tissue import TissueMap

__all__ = ["FieldTable", "ImageResult", "SlideModel", "SlideResult", "check_model", "local_revision"]


@dataclass(frozen=True, eq=False)
class SlideModel:
    """What scoring needs from a loaded model: its spec, engine, name, revision and microns per pixel."""

    spec: ClassifierSpec
    engine: FieldEngine
    name: str
    revision: str
    mpp: float
    mpp_source: str
    runtime: str = "keras"        # what runs the model (``Predictor.runtime``: Keras or an optimised copy)

    @classmethod
    def from_predictor(cls, predictor: Predictor, *, revision: str | None = None) -> SlideModel:
        """Raises :class:`SlideError` when the model takes whole images or has no physical scale."""
        spec = predictor.spec
        check_model(predictor.model_config)
        value, source = model_mpp(spec.scale, predictor.model_name)
        return cls(spec, predictor.engine, predictor.model_name, revision or local_revision(predictor.folder),
                   value, source, predictor.runtime)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> SlideModel:
        return cls.from_predictor(Predictor(folder))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "revision": self.revision, "runtime": self.runtime,
                "um_per_px": round(self.mpp, 4), "um_per_px_source": self.mpp_source,
                "classes": list(self.spec.class_ids), "names": list(self.spec.names)}


@dataclass(frozen=True, eq=False)
class FieldTable:
    """The scored fields: level-0 boxes (N x 4: x, y, width, height), tissue share, probabilities
    (N x C) and the refusal reason of each (``None``: answered)."""

    boxes: np.ndarray
    tissue: np.ndarray
    probabilities: np.ndarray
    reasons: tuple[Reason | None, ...]

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls, classes: int) -> FieldTable:
        return cls(np.zeros((0, 4), np.int64), np.zeros(0), np.zeros((0, classes)), ())

    @property
    def top(self) -> np.ndarray:
        return np.argmax(self.probabilities, axis=1) if len(self) else np.zeros(0, np.int64)

    @property
    def answered(self) -> np.ndarray:
        return np.array([r is None for r in self.reasons], bool)


@dataclass(frozen=True, eq=False)
class SlideResult:
    """One slide's answer: its facts, scale, tissue, fields, and the verdict or refusal.

    ``thumbnail`` is drawn at ``thumbnail_downsample`` level-0 pixels per pixel (for the heatmap);
    ``reading``: the level read, its microns per pixel, the field sides and the grid.
    """

    path: Path
    slide: dict[str, Any]
    scale: SlideScale
    model: SlideModel
    tissue: TissueMap
    thumbnail: np.ndarray
    thumbnail_downsample: float
    fields: FieldTable
    verdict: Refusal | None
    probabilities: np.ndarray | None        # mean over answered fields (None: refused)
    reading: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class ImageResult:
    """A plain image scored by the ordinary image path (``imageclf.core.rule.analyze``)."""

    path: Path
    analysis: ImageAnalysis
    model: SlideModel
    scale: SlideScale
    timings: dict[str, float] = field(default_factory=dict)


def check_model(config: ModelConfig) -> None:
    """Raise :class:`SlideError` when a model (its config.json) cannot score slides: it takes whole
    images, or it has no physical scale. Cheap: no Keras, so a cohort can check before starting."""
    if config.input_unit != "tile":
        raise SlideError(f"The model {config.model_name!r} takes whole images, not fields; "
                         "slides cannot be scored with it.")
    model_mpp(config.scale, config.model_name)


def local_revision(folder: str | os.PathLike) -> str:
    """A local model's identity: the first 12 hex digits of its model.keras's sha256."""
    return f"local sha256:{file_sha256(Path(folder) / 'model.keras')[:12]}"
