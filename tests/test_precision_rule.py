"""The precision rule (issue 28): McNemar per stress row with Holm, the clauses, the bf16 policy at load,
and its record in config.json's runtime block.

The rule and its arithmetic are ``training/export/precision_rule.py``; the engine resolves the
block's precision on the CPU it loads on (``imageclf.model.openvino_engine.resolve_precision``, the
CPU's bf16 capability injected here). The measured figures come from running the rule, not from a test.
"""
from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

from imageclf.hashing import file_sha256
from imageclf.model.config import read_config
from imageclf.model.config_blocks import RUNTIME_FILES, ConfigError, parse_block
from imageclf.model.openvino_engine import (BF16_POLICY, OpenVinoEngine, RuntimeFileError, native_bf16,
                                            resolve_precision)
from tests.conftest import HUB_MODEL
from training.export.precision_rule import (ALPHA, DECISIONS_MIN, Decisions, apply, holm, judge, mcnemar_p, policy,
                                                stress_clause, stress_row)


def _paired(keras_refused: list[bool], candidate_refused: list[bool], name: str = "row") -> dict:
    """A stress row from a hand-made paired table of refusals (labels all equal)."""
    ref, cand = np.array(keras_refused), np.array(candidate_refused)
    zeros = np.zeros(len(ref), int)
    probabilities = np.zeros((len(ref), 3))
    return stress_row(name, Decisions(probabilities, zeros, cand), Decisions(probabilities, zeros, ref))


def _quiet_rows(count: int, n: int = 300) -> list[dict]:
    return [_paired([False] * n, [False] * n, f"quiet-{i}") for i in range(count)]


# McNemar and Holm -----------------------------------------------------------------------------

def test_the_paired_table_counts_each_direction():
    row = _paired([True, True, False, False, True], [False, True, True, False, True], "colon")
    assert (row["n"], row["refused_to_answered"], row["answered_to_refused"]) == (5, 1, 1)
    assert row["refused_keras"] == 0.6 and row["refused"] == 0.6


def test_exact_mcnemar_on_the_discordant_pairs():
    assert mcnemar_p(0, 0) == 1.0                      # nothing moved
    assert mcnemar_p(1, 0) == 1.0                      # one flip cannot be told from chance
    assert mcnemar_p(12, 0) == pytest.approx(2 * 0.5 ** 12)
    assert mcnemar_p(5, 5) == 1.0 and mcnemar_p(3, 7) == mcnemar_p(7, 3)


def test_holm_adjusts_in_rank_order_and_keeps_the_input_order():
    assert holm([0.04, 0.001, 0.03, 0.01]) == pytest.approx([0.06, 0.004, 0.06, 0.03])
    assert holm([0.5]) == [0.5] and holm([0.9, 0.8]) == [1.0, 1.0]   # capped at 1, never below the step before


def test_a_row_with_one_flip_in_eleven_passes():
    """Colon, bf16 against Keras before this rule: 11 fields, a single field moving is 9 points."""
    colon = _paired([True] * 3 + [False] * 8, [True] * 2 + [False] * 9, "nonlung-colon")
    passed, rows = stress_clause(_quiet_rows(19) + [colon])
    assert passed and rows[-1]["refused_to_answered"] == 1 and rows[-1]["p_holm"] == 1.0


def test_a_row_with_many_one_directional_flips_fails():
    moved = _paired([True] * 20 + [False] * 280, [False] * 20 + [False] * 280, "nonlung-kidney")
    passed, rows = stress_clause(_quiet_rows(19) + [moved])
    assert not passed and rows[-1]["moved"] and rows[-1]["p_holm"] < ALPHA
    assert not any(r["moved"] for r in rows[:-1])


def test_holm_is_what_lets_one_borderline_row_through():
    """9 flips one way: p = 0.0039, below 0.01 alone, 0.078 once corrected for 20 rows."""
    borderline = _paired([True] * 9 + [False] * 91, [False] * 100, "restain")
    assert not stress_clause([borderline])[0]
    passed, rows = stress_clause(_quiet_rows(19) + [borderline])
    assert passed and rows[-1]["p"] < ALPHA < rows[-1]["p_holm"]


def _candidate(decision=0.998, ece=0.015, stress=None) -> dict:
    return {"all": {"decision": decision, "label": 0.999, "refusal": 0.999}, "test": {"ece": ece, "accuracy": 0.95},
            "stress": stress or _quiet_rows(3)}


@pytest.mark.parametrize("figures, failed", [
    ({}, None),
    ({"decision": DECISIONS_MIN - 0.001}, "decisions"),
    ({"ece": 0.0201}, "ece"),
    ({"stress": _quiet_rows(2) + [_paired([True] * 30, [False] * 30)]}, "stress"),
])
def test_each_clause_fails_on_its_own(figures, failed):
    verdict = judge(_candidate(**figures))
    assert verdict["passed"] is (failed is None)
    assert [k for k, ok in verdict["clauses"].items() if not ok] == ([failed] if failed else [])


def test_the_policy_is_bf16_only_when_bf16_passed():
    assert policy({"float32": {"passed": True}, "bf16": {"passed": True}}) == BF16_POLICY
    assert policy({"float32": {"passed": True}, "bf16": {"passed": False}}) == "float32"
    assert policy({"float32": {"passed": True}}) == "float32"


# The policy at load -----------------------------------------------------------------------------

def test_the_cpu_capability_decides_native_bf16():
    assert native_bf16(["FP32", "BF16", "INT8"], ["avx2", "avx512_bf16", "avx512_vnni"]) == "avx512_bf16"
    assert native_bf16(["FP32", "BF16"], ["avx512_bf16", "amx_bf16", "amx_tile"]) == "amx_bf16"
    assert native_bf16(["FP32", "BF16"], []) == "BF16"                    # OpenVINO says so, cpuinfo unnamed
    assert native_bf16(["FP32", "INT8"], ["avx512_bf16"]) is None         # OpenVINO would not run it natively


@pytest.mark.parametrize("native, passed, hint, why", [
    ("avx512_bf16", True, "bf16", "native avx512_bf16; precision rule passed"),
    (None, True, "f32", "f32; no native bf16"),
    ("amx_bf16", False, "f32", "f32; native amx_bf16, but the precision rule failed bf16"),
    ("avx512_bf16", None, "f32", "f32; native avx512_bf16, but no precision rule recorded for these files"),
])
def test_the_bf16_policy_resolves_per_cpu_and_rule(native, passed, hint, why):
    chosen = resolve_precision(BF16_POLICY, native=native, rule_passed=passed)
    assert (chosen.hint, chosen.why) == (hint, why)
    assert chosen.name == ("bf16" if hint == "bf16" else "float32")


def test_float32_says_why_when_the_rule_failed_bf16():
    assert resolve_precision("float32", native="avx512_bf16", rule_passed=None).why == "f32"   # no rule: plain
    failed = resolve_precision("float32", native="avx512_bf16", rule_passed=False)
    assert (failed.hint, failed.why) == ("f32", "f32; native avx512_bf16, but the precision rule failed bf16")
    assert resolve_precision("float32", native=None, rule_passed=False).why == "f32; no native bf16"


def test_other_precisions_ignore_the_cpu_and_the_rule():
    assert resolve_precision("float32", native="amx_bf16", rule_passed=True).hint == "f32"
    assert resolve_precision("auto", native=None, rule_passed=None).hint is None
    assert resolve_precision("bf16", native=None, rule_passed=None).hint == "bf16"   # the rule's own measurement
    with pytest.raises(RuntimeFileError, match="'fp8' is not one this code runs"):
        resolve_precision("fp8", native=None, rule_passed=None)


# The record in config.json ---------------------------------------------------------------------

SHA = {"model_openvino.xml": "a" * 64, "model_openvino.bin": "b" * 64}


def _block(**rule) -> dict:
    record = {"rule": "...", "sha256": SHA, "candidates": {"bf16": {"passed": True}, "int8": {"passed": False}},
              "choice": BF16_POLICY, **rule}
    return {"format": "openvino", "precision": BF16_POLICY, "model_file": "model_openvino.xml", "sha256": SHA,
            "outputs": ["probabilities", "features"], "made_by": "python -m training.export.runtime_export m",
            "precision_rule": record}


def test_the_runtime_block_round_trips_the_rule_and_binds_it_to_its_files():
    spec = parse_block("runtime", _block())
    assert spec.to_dict() == _block() and spec.precision == BF16_POLICY
    assert spec.rule_passed("bf16") is True and spec.rule_passed("int8") is False and spec.rule_passed("fp8") is None
    other_files = parse_block("runtime", _block(sha256={**SHA, "model_openvino.bin": "c" * 64}))
    assert other_files.rule_passed("bf16") is None            # measured on other files: not this graph's verdict
    no_rule = parse_block("runtime", {k: v for k, v in _block().items() if k != "precision_rule"})
    assert no_rule.rule_passed("bf16") is None and "precision_rule" not in no_rule.to_dict()
    with pytest.raises(ConfigError, match="precision_rule must be an object"):
        parse_block("runtime", {**_block(), "precision_rule": "passed"})


def test_apply_serves_the_measured_files_with_the_policy(tmp_path):
    """``--apply``: the measured files go into the folder, and the block round-trips through config.json."""
    folder, measured = tmp_path / "model", tmp_path / "scratch" / BF16_POLICY
    for where in (folder, measured):
        where.mkdir(parents=True)
        shutil.copy(HUB_MODEL / "config.json", where / "config.json")
    for name in RUNTIME_FILES:
        (measured / name).write_bytes(f"measured {name}".encode())
    block = json.loads((measured / "config.json").read_text())
    block["runtime"]["sha256"] = {name: file_sha256(measured / name) for name in RUNTIME_FILES}
    (measured / "config.json").write_text(json.dumps(block))
    entry = {"rule": "...", "sha256": block["runtime"]["sha256"], "candidates": {"bf16": {"passed": True}},
             "choice": BF16_POLICY}
    apply(folder, tmp_path / "scratch", entry)
    runtime = read_config(folder).runtime
    assert runtime.precision == BF16_POLICY and runtime.precision_rule == entry and runtime.rule_passed("bf16")
    assert "runtime_export" in runtime.made_by
    assert all((folder / n).read_bytes() == (measured / n).read_bytes() for n in RUNTIME_FILES)
    with pytest.raises(SystemExit, match="other files than the rule measured"):
        apply(folder, tmp_path / "scratch", {**entry, "sha256": SHA})


def test_the_engine_says_which_precision_serves_and_why(caplog):   # compiles the bundled graph twice; no inference
    caplog.set_level(logging.INFO, logger="imageclf.model.openvino_engine")
    xml = HUB_MODEL / "model_openvino.xml"
    chosen = OpenVinoEngine(xml, None, precision=BF16_POLICY, rule_passed=True, native="avx512_bf16")
    assert chosen.description == "openvino bf16 (native avx512_bf16; precision rule passed)"
    if native_bf16() is not None:   # this CPU computes bf16 natively: asked, it does
        assert chosen.arithmetic == "bf16"
    refused = OpenVinoEngine(xml, None, precision=BF16_POLICY, rule_passed=True, native=None)
    assert refused.description == "openvino float32 (f32; no native bf16)" and refused.arithmetic == "f32"
    lines = [r.getMessage() for r in caplog.records if r.name == "imageclf.model.openvino_engine"]
    assert len(lines) == 2 and "in f32" in lines[1] and "no native bf16" in lines[1], lines
