"""What the field loop overlaps with the forward pass (issue 28, items 2 and 3), and that it changes no answer:
batches prepared by reader threads ahead of the engine (read, stains, colour check), one-batch plans in the
calling thread, and a tile's forward pass started before its plan (``pipeline.early_pass``)."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from imageclf.core import pipeline, refusal, rule
from imageclf.core.engine import FieldOutputs
from imageclf.core.request import make_request
from imageclf.model.predictor import Predictor
from tests.conftest import HUB_MODEL
from tests.support.tiny_model import write_test_image


class Counting:
    """A field engine that counts its passes and the fields in each, then runs the real one."""

    def __init__(self, inner):
        self.inner, self.passes, self.lock = inner, [], threading.Lock()

    def run(self, fields: np.ndarray) -> FieldOutputs:
        with self.lock:
            self.passes.append(len(fields))
        return self.inner.run(fields)


class Source:
    """Fields from memory that remember which threads read them."""

    def __init__(self, pixels):
        self.pixels, self.threads = pixels, set()

    def __len__(self):
        return len(self.pixels)

    def read(self, start, stop):
        self.threads.add(threading.current_thread().name)
        return self.pixels[start:stop]


@pytest.fixture(scope="module")
def predictor():
    return Predictor(HUB_MODEL)   # the served engine, with the colour check; about a second without Keras


def _plan(pixels):
    return pipeline.FieldPlan(Source(pixels), np.zeros((len(pixels), 4), np.int64), np.ones(len(pixels)))


@pytest.mark.parametrize("readers", [1, 2, 3])
def test_readers_ahead_of_the_engine_change_no_answer(predictor, readers):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (23, *predictor.input_size, 3), dtype=np.uint8)
    pixels[::4] = 255                                        # blank glass: refused by the colour check
    inline = pipeline.run(_plan(pixels), predictor.engine, predictor.spec, batch=5, readers=0)
    plan = _plan(pixels)
    ahead = pipeline.run(plan, predictor.engine, predictor.spec, batch=5, readers=readers)
    np.testing.assert_array_equal(ahead.probabilities, inline.probabilities)
    assert ahead.reasons == inline.reasons and refusal.Reason.COLOUR in ahead.reasons
    assert plan.source.threads and all(name.startswith("field-read") for name in plan.source.threads)


def test_a_plan_of_one_batch_runs_in_the_calling_thread(predictor):
    plan = _plan(np.zeros((3, *predictor.input_size, 3), np.uint8))
    pipeline.run(plan, predictor.engine, predictor.spec, batch=8)
    assert plan.source.threads == {threading.current_thread().name}


def test_the_colour_check_taken_ahead_is_the_one_taken_after():
    rule_ = refusal.RefusalRule(abstain=refusal.AbstainRule.from_dict({"method": "softmax", "min_confidence": 0.6}))
    fields = np.zeros((3, 8, 8, 3), np.uint8)
    probabilities = np.array([[0.9, 0.1], [0.5, 0.5], [0.7, 0.3]])
    assert refusal.judge_fields(fields, probabilities, None, rule_) == [None, refusal.Reason.CONFIDENCE, None]
    assert refusal.judge_fields(fields, probabilities, None, rule_, colour_failed=[False, False, True]) == [
        None, refusal.Reason.CONFIDENCE, refusal.Reason.COLOUR]


def test_a_tile_runs_one_forward_pass_started_before_its_plan(predictor, tmp_path):
    engine = Counting(predictor.engine)
    tile = write_test_image(tmp_path / "t.png", size=(224, 224), seed=4)
    request = make_request(predictor.request(tile).pixels, "native", predictor.spec.scale)
    early = rule.analyze(request, predictor.spec, engine)
    assert engine.passes == [1]                              # the early pass answered the plan's one field
    plain = rule.analyze(request, predictor.spec, predictor.engine)
    assert early.to_json() == plain.to_json()


def test_an_early_pass_the_plan_does_not_use_is_only_wasted(predictor):
    engine = Counting(predictor.engine)
    ahead = pipeline.early_pass(engine, np.zeros((1, *predictor.input_size, 3), np.uint8))
    other = np.full((1, *predictor.input_size, 3), 200, np.uint8)
    np.testing.assert_array_equal(ahead.run(other).probabilities, predictor.engine.run(other).probabilities)
    assert sorted(engine.passes) == [1, 1]                   # the early one, then the one asked for
