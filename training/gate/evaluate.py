"""Every tissue-gate arm through one stress table, leave-one-source-out, bootstrapped by image.

Reads the caches of ``training.gate.features``. Each arm decides, per field, whether its check
refuses it; the served colour check and confidence floor come before and after it, as in
``imageclf.core.refusal.judge_field``. Whole external images go through the served rule itself
(``imageclf.core.rule.plan`` then ``conclude``), with the arm's decision in the feature-score slot.

Fitting never sees a test tile, an 8-TCGA-lung field or the set it is reported on: thresholds are
quantiles of clean VALIDATION scores; a gate that uses external organs as negatives is reported on
each organ (``source``) or each lab (``lab``: all MoNuSeg/TCGA organs together, CoNSeP, Kather) from
a fit without it; LC25000 colon, when a gate uses it, is reported by near-duplicate-group fold from
the fit on the other fold. Arms with training run three augmentation seeds.

Example:
    nice -n 19 python -m training.gate.evaluate --cache .cache/tissue_gate --out runs/tissue_gate
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from imageclf.core import rule
from imageclf.core.engine import FieldOutputs
from imageclf.model.predictor import Predictor
from training.calibration.feature_ood import load_params
from training.data import image_sets
from training.gate import table
from training.gate.arms import LogisticGate, MahalanobisCheck, pseudo_images, reasons, recentre
from training.gate.features import SEEDS, colon_fold

EVAL = ("test", "stress", "external", "photos", "whole", "colon")
Refuser = Callable[[np.ndarray], np.ndarray]


class Context:
    """The cached sets, the served model's rule and the whole-image plans."""

    def __init__(self, cache: Path, model: Path, external: Path):
        self.data = {p.stem: dict(np.load(p, allow_pickle=False)) for p in sorted(cache.glob("*.npz"))
                     if not p.stem.endswith(".tmp") and p.stem != "stain-reference"}
        self.predictor = Predictor(model, runtime="keras")
        self.spec = self.predictor.spec
        self.min_confidence = float(self.spec.refusal.abstain.min_confidence)
        self.classes = list(self.spec.class_ids)
        self.benign = [self.classes.index(c) for c in self.predictor.model_config.benign_classes]
        self.served = MahalanobisCheck.served(load_params(model), self.spec.refusal.feature_threshold)
        self.plans = {str(p.relative_to(external)): rule.plan(self.predictor.request(p, "auto"), self.spec)
                      for _, p in image_sets.external_sources(external)}
        self.train_mean = _unit(self.data["train"]["features"]).mean(axis=0)
        self.memo: dict = {}

    def get(self, key: str, variant: str = "") -> dict[str, np.ndarray]:
        return self.data[f"{key}@{variant}" if variant else key]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def source_of(sets: np.ndarray, level: str) -> np.ndarray:
    """The leave-out unit of each external field: its organ folder, or its lab (palette)."""
    return np.asarray(sets) if level == "source" else np.array([image_sets.palette_name(s) for s in sets])


def apply(ctx: Context, variant: str, default: Refuser, *, by_source: dict[str, Refuser] | None = None,
          level: str = "source", by_fold: dict[int, Refuser] | None = None,
          transform: Callable[[str, dict], np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The check's refusals on every evaluated set; a source or colon fold uses the fit that left it out."""
    out = {}
    for key in EVAL:
        d = ctx.get(key, variant)
        x = d["features"] if transform is None else transform(key, d)
        refused = default(x)
        if by_source and key in ("external", "whole"):
            units = source_of(d["set"], level)
            for unit, check in by_source.items():
                rows = units == unit
                if rows.any():
                    refused[rows] = check(x[rows])
        if by_fold and key == "colon":
            folds = colon_fold(d["group"])
            for fold, check in by_fold.items():
                refused[folds == fold] = check(x[folds == fold])
        out[key] = refused
    return out


def either(a: dict, b: dict) -> dict:
    return {k: a[k] | b[k] for k in a}


# The arms -----------------------------------------------------------------------------------------

def refit(ctx: Context, seed: int | None, variant: str = "") -> MahalanobisCheck:
    """The Mahalanobis check fitted on clean train tiles (plus the seed's shifted copies) and thresholded on val."""
    parts = [ctx.get("train", variant)] + ([ctx.get(f"train-shifted-s{seed}")] if seed is not None else [])
    x = np.concatenate([p["features"] for p in parts])
    y = np.concatenate([[ctx.classes.index(c) for c in p["label"]] for p in parts])
    return MahalanobisCheck.fit(x, y).with_threshold(ctx.get("val", variant)["features"])


def gate(ctx: Context, seed: int, *, organs: bool, leave_out: set[str] = frozenset(), level: str = "source",
         colon_out: int | None = None) -> LogisticGate:
    """Lung (train + shifted copies) vs colon (+ shifted copies) + far-OOD (+ external organs not left out)."""
    colon, shifted = ctx.get("colon"), ctx.get(f"colon-shifted-s{seed}")
    keep = np.ones(len(colon["group"]), bool) if colon_out is None else colon_fold(colon["group"]) != colon_out
    negatives = [colon["features"][keep], shifted["features"][keep], ctx.get("farood")["features"]]
    if organs:
        ext = ctx.get("external")
        units = source_of(ext["set"], level)
        rows = np.char.startswith(ext["set"].astype(str), "nonlung-") & ~np.isin(units, list(leave_out))
        negatives.append(ext["features"][rows])
    lung = np.concatenate([ctx.get("train")["features"], ctx.get(f"train-shifted-s{seed}")["features"]])
    fitted = LogisticGate.fit(lung, np.concatenate(negatives), seed=seed)
    return fitted.with_threshold(ctx.get("val")["features"])


def gate_refusals(ctx: Context, seed: int, *, organs: bool, level: str = "source") -> dict[str, np.ndarray]:
    """The gate's refusals on every set (memoised: several arms share one gate)."""
    key = ("gate", seed, organs, level)
    if key not in ctx.memo:
        ctx.memo[key] = _gate_refusals(ctx, seed, organs=organs, level=level)
    return {k: v.copy() for k, v in ctx.memo[key].items()}


def _gate_refusals(ctx: Context, seed: int, *, organs: bool, level: str) -> dict[str, np.ndarray]:
    full = gate(ctx, seed, organs=organs, level=level)
    folds = {k: gate(ctx, seed, organs=organs, level=level, colon_out=k).refuses for k in (0, 1)}
    by_source = None
    if organs:
        ext = ctx.get("external")
        units = np.unique(source_of(ext["set"][np.char.startswith(ext["set"].astype(str), "nonlung-")], level))
        by_source = {u: gate(ctx, seed, organs=True, leave_out={u}, level=level).refuses for u in units}
    return apply(ctx, "", full.refuses, by_source=by_source, level=level, by_fold=folds)


def recentre_ids(key: str, d: dict) -> np.ndarray:
    """The image each field is re-centred on: its own image, or a pseudo-slide of 9 single-tile images."""
    if key in ("external", "whole"):
        return d["image"]
    if key == "colon":
        return pseudo_images(np.array([g.split(":")[0] for g in d["group"]]))
    return pseudo_images(np.char.add(d["set"].astype(str), d["label"].astype(str)))


def build_arms(ctx: Context) -> dict[str, tuple[str, bool, Callable[[int | None], dict]]]:
    """name -> (cache variant, seeded?, refusals of one seed)."""
    served = ctx.served
    shift = lambda s: apply(ctx, "", refit(ctx, s).refuses)   # noqa: E731
    recentred = lambda key, d: recentre(d["features"], recentre_ids(key, d), ctx.train_mean)   # noqa: E731
    val = ctx.get("val")
    recentre_check = served.with_threshold(recentre(val["features"], recentre_ids("val", val), ctx.train_mean))
    return {
        "current (served check)": ("", False, lambda s: apply(ctx, "", served.refuses)),
        "control: check refitted on 1200 clean train tiles": ("", False, lambda s: apply(ctx, "", refit(ctx, None).refuses)),
        "1 Macenko, served check statistics": ("macenko", False, lambda s: apply(
            ctx, "macenko", served.with_threshold(ctx.get("val", "macenko")["features"]).refuses)),
        "1 Macenko, served statistics, colour check on the normalised fields": ("macenko", False, lambda s: apply(
            ctx, "macenko", served.with_threshold(ctx.get("val", "macenko")["features"]).refuses)),
        "1 Macenko, check refitted on Macenko train": ("macenko", False, lambda s: apply(
            ctx, "macenko", refit(ctx, None, "macenko").refuses)),
        "2 check refitted on clean + shifted train": ("", True, shift),
        "3 gate: lung vs LC25000 colon + far-OOD": ("", True, lambda s: gate_refusals(ctx, s, organs=False)),
        "3 gate (colon) OR served check": ("", True, lambda s: either(
            gate_refusals(ctx, s, organs=False), apply(ctx, "", served.refuses))),
        "3 gate (colon) OR shifted refit": ("", True, lambda s: either(gate_refusals(ctx, s, organs=False), shift(s))),
        "3 gate: lung vs colon + external organs + far-OOD (leave-organ-out)": (
            "", True, lambda s: gate_refusals(ctx, s, organs=True)),
        "3 gate: same, leave-lab-out": ("", True, lambda s: gate_refusals(ctx, s, organs=True, level="lab")),
        "4 re-centre on the image's fields, served check": ("", False, lambda s: apply(
            ctx, "", recentre_check.refuses, transform=recentred)),
    }


# Measuring -----------------------------------------------------------------------------------------

def abstained_by_set(ctx: Context, variant: str, refusals: dict, colour: str = "colour_ok") -> dict[str, np.ndarray]:
    """Per evaluated cache: one served-order refusal code per field (``colour``: which colour verdict)."""
    return {key: reasons(ctx.get(key, variant)[colour], refusals[key], ctx.get(key, variant)["probabilities"],
                         ctx.min_confidence) for key in EVAL if key != "whole"}


def whole_images(ctx: Context, variant: str, refused: np.ndarray, colour: str = "colour_ok") -> dict[str, tuple]:
    """Each external image through the served rule: (abstained, label), the arm's check as the feature score.
    With ``colour="colour_ok_normalised"`` the colour check judges the normalised fields: it then rides
    in the feature slot too (same verdicts; only the wording of the reason would differ)."""
    d = ctx.get("whole", variant)
    refusal_rule = dataclasses.replace(ctx.spec.refusal, feature_threshold=0.5)
    if colour != "colour_ok":
        refused = refused | ~d[colour]
        refusal_rule = dataclasses.replace(refusal_rule, abstain=dataclasses.replace(refusal_rule.abstain, method="softmax"))
    spec = dataclasses.replace(ctx.spec, refusal=refusal_rule)
    out = {}
    for image, field_plan in ctx.plans.items():
        rows = np.flatnonzero(d["image"] == image)
        outputs = None
        if field_plan.fields is not None:
            if len(rows) != len(field_plan.picked):
                raise ValueError(f"{image}: {len(rows)} cached fields, the rule cut {len(field_plan.picked)}.")
            outputs = FieldOutputs(d["probabilities"][rows].astype(np.float64), refused[rows].astype(np.float64))
        analysis = rule.conclude(field_plan, outputs, spec)
        out[image] = (analysis.abstained, analysis.label, analysis.abstain_code)
    return out


def measure(ctx: Context, name: str, variant: str, seeded: bool, make: Callable, colour: str = "colour_ok") -> dict:
    """One arm's row: rates averaged over seeds, intervals by image, the worst seed for the constraints."""
    seeds = list(SEEDS) if seeded else [None]
    runs = []
    for seed in seeds:
        refusals = make(seed)
        runs.append((abstained_by_set(ctx, variant, refusals, colour), whole_images(ctx, variant, refusals["whole"], colour)))
    mean = {k: np.mean([(codes[k] != "") for codes, _ in runs], axis=0) for k in runs[0][0]}
    ext, stress, test = ctx.get("external", variant), ctx.get("stress", variant), ctx.get("test", variant)
    refused = {s: table.by_image(mean["external"][ext["set"] == s], ext["image"][ext["set"] == s])
               for s in np.unique(ext["set"])}
    refused["lc25000-colon"] = table.by_image(mean["colon"], ctx.get("colon")["group"])
    refused["he-tinted-photos"] = table.by_image(mean["photos"], ctx.get("photos")["image"])
    shifts = {}
    for name_, d, key in [(s, stress, "stress") for s in np.unique(stress["set"])] + [("lung-tcga", ext, "external")]:
        rows = d["set"] == name_
        truth = np.array([ctx.classes.index(c) for c in d["label"][rows]])
        called_benign = np.isin(d["probabilities"][rows].argmax(axis=1), ctx.benign)
        cancer = ~np.isin(truth, ctx.benign)
        benign = [float((called_benign & (codes[key][rows] == ""))[cancer].mean()) for codes, _ in runs]
        shifts[name_] = {"benign": max(benign), "abstained": max(float((codes[key][rows] != "").mean()) for codes, _ in runs)}
    worst = max(shifts.items(), key=lambda kv: kv[1]["benign"])
    truth = np.array([ctx.classes.index(c) for c in test["label"]])
    whole_refused, answered, benign_whole, codes = {}, [], [], []
    for _, verdicts in runs:
        tcga = [v for k, v in verdicts.items() if k.startswith("lung-tcga/")]
        answered.append(sum(not a for a, _, _ in tcga))
        benign_whole.append(sum((not a) and label in [ctx.classes[i] for i in ctx.benign] for a, label, _ in tcga))
        codes.append(sorted(str(c) for a, _, c in tcga if a))
    for source in {k.split("/")[0] if k.startswith("lung-tcga") else "nonlung-" + k.split("/")[1] for k in ctx.plans}:
        prefix = "lung-tcga/" if source == "lung-tcga" else f"nonlung/{source.removeprefix('nonlung-')}/"
        whole_refused[source] = float(np.mean([a for _, v in runs for k, (a, _, _) in v.items() if k.startswith(prefix)]))
    spread = f"{min(answered)}-{max(answered)}" if min(answered) != max(answered) else str(answered[0])
    return {"arm": name, "seeds": len(seeds), "refused": refused, "shifts": shifts,
            "worst_benign": (worst[0], worst[1]["benign"]),
            "id_abstention": table.by_image(mean["test"], test["group"]),
            "id_abstention_worst_seed": max(float((codes["test"] != "").mean()) for codes, _ in runs),
            "test_accuracy": float((test["probabilities"].argmax(axis=1) == truth).mean()),
            "test_ece": table.ece(test["probabilities"], truth),
            "whole_tcga": {"answered": spread, "benign": max(benign_whole), "per_seed": answered, "refusal_codes": codes},
            "whole_refused": whole_refused}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Measure the tissue-gate arms (issue 20).")
    parser.add_argument("--cache", type=Path, default=Path(".cache/tissue_gate"))
    parser.add_argument("--model", type=Path, default=Path("hub_model"))
    parser.add_argument("--external", type=Path, default=Path("../shared/data/external-he"))
    parser.add_argument("--out", type=Path, default=Path("runs/tissue_gate"))
    parser.add_argument("--arm", action="append", help="substring of the arms to run (repeatable; default: all)")
    args = parser.parse_args(argv)
    ctx = Context(args.cache, args.model, args.external)
    arms = build_arms(ctx)
    chosen = [n for n in arms if n.startswith("current") or not args.arm or any(a in n for a in args.arm)]
    rows = []
    for name in chosen:
        variant, seeded, make = arms[name]
        colour = "colour_ok_normalised" if "colour check on the normalised" in name else "colour_ok"
        if (variant and f"test@{variant}" not in ctx.data) or (seeded and "colon-shifted-s2" not in ctx.data):
            print(f"skipped (cache incomplete): {name}", flush=True)
            continue
        rows.append(measure(ctx, name, variant, seeded, make, colour))
        print(f"done: {name}", flush=True)
    decision = table.judge(rows)
    text = (table.main_table(rows) + "\n" + table.shift_table(rows) + "\n" + table.whole_table(rows)
            + f"\nChosen by the declared rule: {decision or 'keep current'}\n")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gate.json").write_text(json.dumps({"rows": rows, "decision": decision}, indent=1, default=str) + "\n")
    (args.out / "gate.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
