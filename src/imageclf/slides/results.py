"""The typed values a scored slide or image is made of: :class:`SlideResult`, :class:`ImageResult`.

Pure data: :mod:`imageclf.slides.scoring` makes them (through the one field loop,
``imageclf.core.pipeline``), :mod:`imageclf.slides.writers` and :mod:`imageclf.slides.heatmap`
present them. A slide's fields are the core's ``FieldTable`` and its verdict the core's ``Verdict``:
the same types, and the same JSON writer, as an image's.

Example:
    >>> result = score_slide("CMU-1-Small-Region.svs", model)
    >>> result.verdict.abstain_code, len(result.fields)
    ('fields_refused', 109)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imageclf.core.field_table import FieldTable
from imageclf.core.stain import StainEstimate
from imageclf.core.verdict import ImageAnalysis, Verdict
from imageclf.slides.physical import SlideScale
from imageclf.slides.slide_model import SlideModel
from imageclf.slides.tissue import TissueMap

__all__ = ["ImageResult", "SlideResult"]


@dataclass(frozen=True, eq=False)
class SlideResult:
    """One slide's answer: its facts, scale, tissue, fields, and the verdict.

    ``thumbnail`` is drawn at ``thumbnail_downsample`` level-0 pixels per pixel (for the heatmap);
    ``reading``: the level read, its microns per pixel, the field sides and the grid; ``stain``: the
    slide's one stain estimate (``None``: the model normalises nothing, or no field was read).
    """

    path: Path
    slide: dict[str, Any]
    scale: SlideScale
    model: SlideModel
    tissue: TissueMap
    thumbnail: np.ndarray
    thumbnail_downsample: float
    fields: FieldTable
    verdict: Verdict
    reading: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    stain: StainEstimate | None = None


@dataclass(frozen=True, eq=False)
class ImageResult:
    """A plain image scored by the ordinary image path (``imageclf.core.rule.analyze``)."""

    path: Path
    analysis: ImageAnalysis
    model: SlideModel
    scale: SlideScale
    timings: dict[str, float] = field(default_factory=dict)
