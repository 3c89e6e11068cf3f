"""What the serving rule needs to know about one classifier, as one typed value.

Built by the model loader (``imageclf.model.predictor``) from ``config.json``, ``labels.json``
and the settings; read by the rule (``imageclf.core.rule``) and by every client that presents a
result. Pure data: no Keras, no files.

Example:
    >>> spec = ClassifierSpec(class_ids=("a", "b"), names=("A", "B"), input_size=(224, 224))
    >>> spec.refusal.abstain.method, spec.max_fields
    ('none', 64)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from imageclf.core.refusal import RefusalRule

if TYPE_CHECKING:  # types only
    from imageclf.core.scale import ScaleSpec
    from imageclf.core.stain import StainSpec

DEFAULT_MAX_FIELDS = 64   # most tissue fields classified per image (bounds the time per image)

__all__ = ["ClassifierSpec", "DEFAULT_MAX_FIELDS"]


@dataclass(frozen=True)
class ClassifierSpec:
    """Classes (ids and names, by output index), input size and unit, scale block, stain block,
    refusal rule, and the cap on fields per image."""

    class_ids: tuple[str, ...]
    names: tuple[str, ...]
    input_size: tuple[int, int]
    input_unit: str = "tile"           # "tile": large images are cut into fields; else resized whole
    scale: ScaleSpec | None = None
    stain: StainSpec | None = None     # fields are mapped to these reference stains before the engine
    refusal: RefusalRule = field(default_factory=RefusalRule)
    max_fields: int = DEFAULT_MAX_FIELDS
