"""Behaviour unchanged by the restructured serving core (issue 17): the JSON of the 30 full-size
originals and of the hostile corpus, and of the 115 other-lab images, is byte-identical to the
answers recorded before it (``tests/support/golden/``), and every refusal carries a code whose
sentence it shows. Byte-identical holds for the Keras engine (``runtime="keras"``), which made
the recording; the optimised runtime's answers are held to the same decisions in
``tests/test_runtime_engine.py``."""
from __future__ import annotations

import json

import pytest

from imageclf.core.refusal import Reason
from imageclf.model.predictor import Predictor
from tests.conftest import HUB_MODEL, require_dataset
from tests.support.golden import ANSWERS, EXTERNAL, answers, dumps, external_answers
from tests.support.hostile_corpus import with_limits


@pytest.mark.slow
def test_answers_are_byte_identical_to_the_recorded_ones(monkeypatch):
    originals = require_dataset("external-he") / "lc25000-lung-768"
    with_limits(monkeypatch)   # the size limits the hostile corpus was built against
    found = dumps(answers(Predictor(HUB_MODEL, runtime="keras"), originals))
    expected = ANSWERS.read_text(encoding="utf-8")
    assert len(json.loads(found)) == len(json.loads(expected)) == 68
    assert found == expected


@pytest.mark.slow
def test_other_lab_answers_are_byte_identical_to_the_recorded_ones():
    found = dumps(external_answers(Predictor(HUB_MODEL, runtime="keras"), require_dataset("external-he")))
    assert len(json.loads(found)) == 115
    assert found == EXTERNAL.read_text(encoding="utf-8")


@pytest.mark.slow
def test_every_refusal_has_a_code_that_names_its_sentence(lung_data):
    predictor = Predictor(HUB_MODEL)
    white = predictor.analyze(predictor.prepare(lung_data / "lung_n" / "lungn1.jpeg") * 0 + 255).to_json()
    assert white["abstained"] and white["abstain_code"] == Reason.COLOUR.value
    assert white["abstain_reason"] == Reason.COLOUR.sentence()
    answered = predictor.analyze(lung_data / "lung_scc" / "lungscc1.jpeg").to_json()
    assert answered["abstain_code"] is None and answered["abstain_reason"] is None
