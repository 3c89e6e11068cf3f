"""The model as slide scoring sees it: spec, engine, name, revision and the microns per pixel it reads at.

The model's physical scale is part of its contract: ``scale.microns_per_pixel`` of its config.json
(``imageclf.core.scale.ScaleSpec``), read once when the model loads. A model that declares none, or
takes whole images, cannot score slides.

Example:
    >>> model = SlideModel.from_folder("hub_model")
    >>> model.mpp, model.mpp_source
    (0.368, 'config.json scale.microns_per_pixel')
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imageclf.core.engine import FieldEngine
from imageclf.core.scale import ScaleSpec
from imageclf.core.spec import ClassifierSpec
from imageclf.hashing import file_sha256
from imageclf.model.config import ModelConfig
from imageclf.model.predictor import Predictor
from imageclf.slides.physical import check_mpp
from imageclf.slides.reader import SlideError

MPP_SOURCE = "config.json scale.microns_per_pixel"

__all__ = ["SlideModel", "check_model", "local_revision", "model_mpp"]


@dataclass(frozen=True, eq=False)
class SlideModel:
    """What scoring needs from a loaded model: its spec, engine, name, revision and microns per pixel."""

    spec: ClassifierSpec
    engine: FieldEngine
    name: str
    revision: str
    mpp: float
    mpp_source: str = MPP_SOURCE
    runtime: str = "keras"        # what runs the model (``Predictor.runtime``: Keras or an optimised copy)

    @classmethod
    def from_predictor(cls, predictor: Predictor, *, revision: str | None = None) -> SlideModel:
        """Raises :class:`SlideError` when the model takes whole images or has no physical scale."""
        check_model(predictor.model_config)
        return cls(predictor.spec, predictor.engine, predictor.model_name,
                   revision or local_revision(predictor.folder), model_mpp(predictor.spec.scale,
                                                                            predictor.model_name),
                   runtime=predictor.runtime)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> SlideModel:
        return cls.from_predictor(Predictor(folder))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "revision": self.revision, "runtime": self.runtime,
                "um_per_px": round(self.mpp, 4), "um_per_px_source": self.mpp_source,
                "classes": list(self.spec.class_ids), "names": list(self.spec.names)}


def model_mpp(scale: ScaleSpec | None, model_name: str) -> float:
    """Microns per pixel of the model's input, from its config's scale block.

    Raises:
        SlideError: the model declares none.
    """
    if scale is None or scale.microns_per_pixel is None:
        raise SlideError(f"The model {model_name!r} declares no microns per pixel (config.json "
                         "scale.microns_per_pixel), so slides cannot be read at its scale.")
    return check_mpp(scale.microns_per_pixel, "The model's microns per pixel")


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
