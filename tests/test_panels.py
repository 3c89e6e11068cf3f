"""``space/panels.py``: the field summary groups refused fields by reason code, never by sentence."""
from __future__ import annotations

import numpy as np

import panels
from imageclf.core.fields import FieldCell, FieldGrid
from imageclf.core.refusal import Reason, Refusal
from imageclf.core.scale import ScaleDecision
from imageclf.core.verdict import ImageAnalysis, Verdict


def _analysis(reasons: list[Reason | None], *, refusal: Refusal | None = None) -> ImageAnalysis:
    tiles = tuple(FieldCell(0, i, 0, 16 * i, 1.0, "classified", class_index=0, probabilities=(1.0, 0.0), reason=r)
                  for i, r in enumerate(reasons)) + (FieldCell(1, 0, 16, 0, 0.0),)
    fields = FieldGrid(tile_size=(16, 16), grid=(2, len(reasons)), cells=tiles, class_ids=("a", "b"))
    return ImageAnalysis(ScaleDecision("native", 1.0, "native"), fields, np.zeros((32, 16 * len(reasons), 3), np.uint8),
                         Verdict(("a", "b"), ("A", "B"), np.array([1.0, 0.0]), refusal))


def test_refused_fields_are_counted_per_check():
    html = panels.field_summary_html(_analysis([None, Reason.FEATURE, Reason.FEATURE, Reason.COLOUR]))
    assert "Not recognised: feature check</td><td>2</td><td>50.0%" in html
    assert "Not recognised: colour check</td><td>1</td><td>25.0%" in html
    assert "<td>A</td>" not in html and "A</td><td>1</td><td>25.0%" in html
    assert "1 background fields skipped; 4 classified." in html


def test_an_image_without_an_answer_names_no_class_in_its_summary():
    refusal = Refusal(Reason.FIELDS_REFUSED, {"refused": 2, "fields": 2, "most_often": ""})
    html = panels.field_summary_html(_analysis([Reason.CONFIDENCE, Reason.CONFIDENCE], refusal=refusal))
    assert "Not recognised: confidence floor</td><td>2</td><td>100.0%" in html
    assert "A</td>" not in html and "B</td>" not in html


def test_about_names_each_precision_candidates_verdict():
    """The runtime block's precision rule, as About shows it: passed, or failed with the clauses that failed."""
    rule = {"measured": "2026-12-06", "candidates": {
        "float32": {"clauses": {"decisions": True, "ece": True, "stress": True}, "passed": True},
        "bf16": {"clauses": {"decisions": True, "ece": True, "stress": True}, "passed": True},
        "int8": {"clauses": {"decisions": False, "ece": True, "stress": False}, "passed": False}}}
    line = panels.precision_rule_line(rule)
    assert "measured 2026-12-06" in line and "only where the CPU has it natively" in line
    assert "float32 passed, bf16 passed, int8 failed (decisions, stress)." in line
