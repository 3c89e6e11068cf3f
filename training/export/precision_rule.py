"""The precision rule: which arithmetic may serve the OpenVINO copy of ``model.keras``, declared before measuring.

Declared 2026-12 (issue 28), before any candidate was measured with it. The reference is the
canonical model, ``model.keras``, run by Keras. A decision is a field's label (argmax) and whether
the served refusal rule refuses it (``imageclf.core.refusal.judge_fields``: colour, feature check,
tissue gate, confidence floor), made by the served field loop (``training/export/precision_measure.py``).
The fields: every grouped TEST tile of the folder's ``split_manifest.csv`` and every field of the
stress suite's field rows (``training/evaluation/stress.py``: the same sets from the same seeds).
A candidate passes when all three clauses hold:

1. **Decisions**: equal to Keras's on at least 99.5% of all those fields together.
2. **Calibration**: ECE (top label, 15 equal-width bins) on the grouped TEST tiles at most 2%.
3. **Stress rows move no more than chance explains**: per stress field row, an exact McNemar test on
   the paired per-field refusal decisions (refused / answered, Keras against the candidate):
   b = fields Keras refused and the candidate answered, c = the reverse; p = the two-sided
   binomial test of b in b + c at 1/2 (p = 1 when b + c = 0). Holm's correction across all rows
   at a family-wise alpha of 0.01: the clause fails when any row's Holm-adjusted p is below 0.01.
   Label changes are counted per row and judged by clause 1 (pooled), not tested per row.

Applied to the candidates the export makes from ``model.keras`` (``training.export.runtime_export``):
float32 and bf16 arithmetic on the same float32 files, and int8 (NNCF, 300 TRAIN tiles). Serving:
bf16 where the CPU has native bf16 (AVX512_BF16 or AMX) and bf16 passes, float32 elsewhere (the
runtime block's precision ``bf16-where-native``, resolved at load by ``imageclf.model.openvino_engine``).
int8 is measured and recorded, not served by this policy.

Usage (writes ``--out``/precision_rule.json and .md; ``--apply`` also puts the measured float32 files
and the record into the folder's config.json ``runtime`` block, with the bf16 policy if bf16 passed;
``--apply-measured`` does that from the last run's files without measuring again):
    .venv/bin/python -m training.export.precision_rule hub_model --data ../shared/data/lc25000-lung-224 \\
        --external ../shared/data/external-he --apply
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

from imageclf.model.config import read_config, write_config
from imageclf.model.config_blocks import RUNTIME_FILES
from imageclf.model.openvino_engine import BF16_POLICY
from training.export.precision_fields import ECE_BINS, Decisions, stress_row  # noqa: F401  (re-exported)

DECISIONS_MIN = 0.995   # clause 1: share of decisions equal to Keras's, TEST tiles and stress fields together
ECE_MAX = 0.02          # clause 2: on the grouped TEST tiles
ALPHA = 0.01            # clause 3: family-wise, Holm across the stress rows
RULE = (f"decisions (label and refusal) = Keras's on >= {DECISIONS_MIN:.1%} of grouped TEST tiles and stress "
        f"fields together; ECE ({ECE_BINS} bins, TEST) <= {ECE_MAX:.0%}; per stress row, exact two-sided McNemar "
        f"on the paired refusals, Holm-adjusted p >= {ALPHA} for every row")


def mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar p for b and c discordant pairs (1 when there are none)."""
    return 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order (monotone, at most 1)."""
    m, adjusted, running = len(pvalues), [0.0] * len(pvalues), 0.0
    for rank, i in enumerate(np.argsort(pvalues, kind="stable")):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def stress_clause(rows: list[dict], *, alpha: float = ALPHA) -> tuple[bool, list[dict]]:
    """Clause 3 on rows with ``refused_to_answered`` (b) and ``answered_to_refused`` (c): passed, and
    each row with its McNemar p, Holm-adjusted p and whether it moved beyond chance."""
    p = [mcnemar_p(r["refused_to_answered"], r["answered_to_refused"]) for r in rows]
    judged = [{**r, "p": pi, "p_holm": ph, "moved": ph < alpha} for r, pi, ph in zip(rows, p, holm(p), strict=True)]
    return not any(r["moved"] for r in judged), judged


def judge(candidate: dict) -> dict:
    """One candidate's measured figures (``precision_measure.measure``) -> the clauses, judged."""
    stress_ok, rows = stress_clause(candidate["stress"])
    clauses = {"decisions": candidate["all"]["decision"] >= DECISIONS_MIN, "ece": candidate["test"]["ece"] <= ECE_MAX,
               "stress": stress_ok}
    return {**candidate, "stress": rows, "clauses": clauses, "passed": all(clauses.values())}


def policy(verdicts: dict[str, dict]) -> str:
    """The runtime block's precision: the bf16 policy when bf16 passed, else float32."""
    return BF16_POLICY if verdicts.get("bf16", {}).get("passed") else "float32"


def record(report: dict, verdicts: dict[str, dict], *, made_by: str) -> dict:
    """What config.json's ``runtime.precision_rule`` keeps: the rule, the figures, the verdicts, the command."""
    def figures(name: str, v: dict) -> dict:
        moved = {r["set"]: f"{r['refused_to_answered']} / {r['answered_to_refused']} / {r['p_holm']:.3g}"
                 for r in v["stress"] if r["refused_to_answered"] + r["answered_to_refused"]}
        out = {"arithmetic": report["arithmetic"][name], "decisions_equal": round(v["all"]["decision"], 5),
               "label_equal": round(v["all"]["label"], 5), "refusal_equal": round(v["all"]["refusal"], 5),
               "ece": round(v["test"]["ece"], 5), "accuracy": round(v["test"]["accuracy"], 5),
               "stress_rows_moved": moved, "clauses": v["clauses"], "passed": v["passed"]}
        return out | ({"sha256": report["int8_sha256"]} if name == "int8" else {})
    return {"rule": RULE, "thresholds": {"decisions_equal_min": DECISIONS_MIN, "ece_max": ECE_MAX, "ece_bins": ECE_BINS,
                                         "alpha": ALPHA, "correction": "holm",
                                         "stress_test": "exact two-sided McNemar on per-field refusal"},
            "reference": "model.keras (Keras)",
            "fields": {**report["fields"], "stress_rows": len(report["stress_rows"])},
            "stress_rows_moved_format": "set: Keras refused, candidate answered / the reverse / Holm-adjusted p",
            "cpu": report["cpu"], "sha256": report["sha256"],
            "candidates": {name: figures(name, v) for name, v in verdicts.items()},
            "choice": policy(verdicts), "measured": report["measured"], "made_by": made_by}


def apply(folder: Path, scratch: Path, entry: dict) -> None:
    """The measured float32 files into ``folder`` and its runtime block: the policy and the record."""
    measured = scratch / BF16_POLICY
    spec = read_config(measured).runtime
    if {name: spec.sha256[name] for name in RUNTIME_FILES} != entry["sha256"]:
        raise SystemExit(f"{measured} holds other files than the rule measured; run it again.")
    for name in RUNTIME_FILES:
        shutil.copyfile(measured / name, folder / name)
    config = read_config(folder)
    made = (f"python -m training.export.runtime_export {folder} --precision {entry['choice']} "
            "(the files the precision rule measured)")
    write_config(folder, dataclasses.replace(config, runtime=dataclasses.replace(
        spec, precision=entry["choice"], made_by=made, precision_rule=entry)))


def markdown(report: dict, verdicts: dict[str, dict]) -> str:
    """The measured table, the stress rows that moved, and the speed ratios."""
    lines = [f"CPU: {report['cpu']}; native bf16: {report['native_bf16'] or 'none'}",
             f"fields: {report['fields']['test']} grouped TEST tiles + {report['fields']['stress']} stress fields", "",
             "| candidate | arithmetic | decisions = Keras | label | refusal | ECE (TEST) | accuracy (TEST) | "
             "rows moved (Holm p < 0.01) | decisions | ECE | stress | passed |", "|---" * 12 + "|"]
    for name, v in verdicts.items():
        a, c = v["all"], v["clauses"]
        lines.append(f"| {name} | {report['arithmetic'][name]} | {a['decision']:.2%} | {a['label']:.2%} | "
                     f"{a['refusal']:.2%} | {v['test']['ece']:.2%} | {v['test']['accuracy']:.2%} | "
                     f"{sum(r['moved'] for r in v['stress'])} of {len(v['stress'])} | "
                     + " | ".join("pass" if c[k] else "FAIL" for k in ("decisions", "ece", "stress"))
                     + f" | {'yes' if v['passed'] else 'no'} |")
    keras = report["keras_test"]
    lines += ["", f"Keras on TEST: ECE {keras['ece']:.2%}, accuracy {keras['accuracy']:.2%}",
              "", "| stress row | n | " + " | ".join(f"{name}: b / c / label / p / Holm p" for name in verdicts) + " |",
              "|---|---|" + "---|" * len(verdicts)]
    for i, name in enumerate(report["stress_rows"]):
        rows = [v["stress"][i] for v in verdicts.values()]
        lines.append(f"| {name} | {rows[0]['n']} | " + " | ".join(
            f"{r['refused_to_answered']} / {r['answered_to_refused']} / {r['label_changed']} / {r['p']:.3g} / "
            f"{r['p_holm']:.3g}" for r in rows) + " |")
    speed = report["speed"]
    lines += ["", "b: Keras refused, candidate answered; c: the reverse; label: fields whose label changed.", "",
              "| engine | batch-1 ms | x float32 | batch-32 fields/s | x float32 |", "|---|---|---|---|---|"]
    base = speed["float32"]
    for name, s in speed.items():
        lines.append(f"| {name} | {s['batch1_ms']:.1f} | {s['batch1_ms'] / base['batch1_ms']:.2f} | "
                     f"{s['batch32_fields_s']:.1f} | {s['batch32_fields_s'] / base['batch32_fields_s']:.2f} |")
    lines += ["", f"Choice: {policy(verdicts)}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="model folder with model.keras, config.json and split_manifest.csv")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/lc25000-lung-224"))
    parser.add_argument("--manifest", type=Path, default=Path("training/splits/lc25000-lung-grouped.csv"),
                        help="the stress suite's manifest (as training/evaluation/stress.py)")
    parser.add_argument("--external", type=Path, default=Path("../shared/data/external-he"))
    parser.add_argument("--out", type=Path, default=Path("runs/precision"), help="candidate files and the report")
    parser.add_argument("--tiles", type=int, default=0, help="TEST tiles (0: all; fewer only to try the command)")
    parser.add_argument("--per-class", type=int, default=100, help="stress: test tiles per class (as stress.py)")
    parser.add_argument("--rounds", type=int, default=5, help="speed rounds (candidates interleaved)")
    parser.add_argument("--apply", action="store_true", help="write the verdict and the measured files into FOLDER")
    parser.add_argument("--apply-measured", action="store_true",
                        help="measure nothing: apply what the last run wrote to --out (after reading its report)")
    args = parser.parse_args(argv)
    if args.apply_measured:   # the last run's figures, judged again by this rule (the same verdicts)
        measured = json.loads((args.out / "precision_rule.json").read_text())
        entry = record(measured, {name: judge(c) for name, c in measured["candidates"].items()},
                       made_by=measured["record"]["made_by"])
        apply(args.folder, args.out, entry)
        print(f"{args.folder}/config.json: runtime precision {entry['choice']}, precision_rule recorded")
        return 0
    from training.export import precision_measure  # deferred: TensorFlow and OpenVINO, for a run only

    made_by = "python -m training.export.precision_rule " + shlex.join(sys.argv[1:] if argv is None else argv)
    started = time.time()
    report = precision_measure.measure(args.folder, data=args.data, manifest=args.manifest, external=args.external,
                                       scratch=args.out, made_by=made_by, tiles=args.tiles, per_class=args.per_class,
                                       rounds=args.rounds,
                                       log=lambda line: print(f"[{time.time() - started:5.0f} s] {line}", flush=True))
    report["measured"] = time.strftime("%Y-%m-%d")
    report["stress_rows"] = [r["set"] for r in next(iter(report["candidates"].values()))["stress"]]
    verdicts = {name: judge(c) for name, c in report["candidates"].items()}
    entry = record(report, verdicts, made_by=made_by)
    (args.out / "precision_rule.json").write_text(json.dumps({**report, "verdicts": verdicts, "record": entry},
                                                             indent=1, default=str) + "\n")
    (args.out / "precision_rule.md").write_text(markdown(report, verdicts) + "\n")
    print(markdown(report, verdicts))
    print(f"took {time.time() - started:.0f} s")
    if not verdicts["float32"]["passed"]:
        print("float32 failed the rule: nothing applied (with all the fields, that means the export is wrong).")
        return 1
    if args.apply:
        apply(args.folder, args.out, entry)
        print(f"{args.folder}/config.json: runtime precision {entry['choice']}, precision_rule recorded")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
