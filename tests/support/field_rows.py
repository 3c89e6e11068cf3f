"""Tiles answered one field each by ``Predictor.classify_fields`` (the one field loop), as one dict per
tile: the shape the tests compare endpoints and files against.

Example:
    >>> one_field(predictor, "tile.jpeg")["label"], field_rows(predictor, [a, b])[1]["abstained"]
    ('lung_aca', False)
"""
from __future__ import annotations

from typing import Any

import numpy as np

from imageclf.model.predictor import ImageInput, Predictor


def field_rows(predictor: Predictor, images: list[ImageInput]) -> list[dict[str, Any]]:
    """One dict per image: the top class (named even when refused, as a field's own numbers), its
    probabilities and confidences, and the refusal (abstained, reason, code) with the feature score."""
    table = predictor.classify_fields(images)
    ids, names = predictor.spec.class_ids, predictor.spec.names
    scores = [None] * len(table) if table.feature_scores is None else [float(s) for s in table.feature_scores]
    rows = []
    for probs, reason, score in zip(table.probabilities, table.reasons, scores, strict=True):
        top = int(np.argmax(probs))
        rows.append({"label": ids[top], "name": names[top], "confidence": float(probs[top]),
                     "probabilities": {cid: float(p) for cid, p in zip(ids, probs, strict=True)},
                     "confidences": {name: float(p) for name, p in zip(names, probs, strict=True)},
                     "abstained": reason is not None, "abstain_reason": None if reason is None else reason.sentence(),
                     "abstain_code": None if reason is None else reason.value, "feature_score": score})
    return rows


def one_field(predictor: Predictor, image: ImageInput) -> dict[str, Any]:
    """:func:`field_rows` of one image."""
    return field_rows(predictor, [image])[0]
