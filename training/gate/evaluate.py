"""Every tissue-gate arm through one stress table, leave-one-source-out, bootstrapped by image.

Reads the caches of ``training.gate.features`` and ``training.gate.finetune`` (arm 5's per-seed
``@ft<seed>`` sets); ``training.gate.measure`` turns each arm into a row. Each arm decides, per field, whether its check
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
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from training.data import image_sets
from training.gate import table
from training.gate.arms import LogisticGate, MahalanobisCheck, pseudo_images, recentre
from training.gate.features import SEEDS, colon_fold
from training.gate.measure import EVAL, Context, measure

Refuser = Callable[[np.ndarray], np.ndarray]


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
         colon_out: int | None = None, variant: str = "") -> LogisticGate:
    """Lung (train + shifted copies) vs colon (+ shifted copies) + far-OOD (+ external organs not left out).
    With ``variant`` (a fine-tuned model's features), the lung side's shifted copies are that model's own
    heavy-policy training copies (``training.gate.finetune``)."""
    colon, shifted = ctx.get("colon", variant), ctx.get(f"colon-shifted-s{seed}", variant)
    keep = np.ones(len(colon["group"]), bool) if colon_out is None else colon_fold(colon["group"]) != colon_out
    negatives = [colon["features"][keep], shifted["features"][keep], ctx.get("farood", variant)["features"]]
    if organs:
        ext = ctx.get("external", variant)
        units = source_of(ext["set"], level)
        rows = np.char.startswith(ext["set"].astype(str), "nonlung-") & ~np.isin(units, list(leave_out))
        negatives.append(ext["features"][rows])
    lung = np.concatenate([ctx.get("train", variant)["features"], ctx.get(f"train-shifted-s{seed}", variant)["features"]])
    fitted = LogisticGate.fit(lung, np.concatenate(negatives), seed=seed)
    return fitted.with_threshold(ctx.get("val", variant)["features"])


def gate_refusals(ctx: Context, seed: int, *, organs: bool, level: str = "source", variant: str = "") -> dict[str, np.ndarray]:
    """The gate's refusals on every set (memoised: several arms share one gate)."""
    key = ("gate", seed, organs, level, variant)
    if key not in ctx.memo:
        ctx.memo[key] = _gate_refusals(ctx, seed, organs=organs, level=level, variant=variant)
    return {k: v.copy() for k, v in ctx.memo[key].items()}


def _gate_refusals(ctx: Context, seed: int, *, organs: bool, level: str, variant: str) -> dict[str, np.ndarray]:
    full = gate(ctx, seed, organs=organs, level=level, variant=variant)
    folds = {k: gate(ctx, seed, organs=organs, level=level, colon_out=k, variant=variant).refuses for k in (0, 1)}
    by_source = None
    if organs:
        ext = ctx.get("external")
        units = np.unique(source_of(ext["set"][np.char.startswith(ext["set"].astype(str), "nonlung-")], level))
        by_source = {u: gate(ctx, seed, organs=True, leave_out={u}, level=level, variant=variant).refuses for u in units}
    return apply(ctx, variant, full.refuses, by_source=by_source, level=level, by_fold=folds)


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
        "5 fine-tuned conv5 + head (heavy stain), check refitted on its train features": (
            "ft{seed}", True, lambda s: apply(ctx, f"ft{s}", refit(ctx, None, f"ft{s}").refuses)),
        "5 fine-tuned, check refitted, OR gate (colon) on its features": (
            "ft{seed}", True, lambda s: either(apply(ctx, f"ft{s}", refit(ctx, None, f"ft{s}").refuses),
                                               gate_refusals(ctx, s, organs=False, variant=f"ft{s}"))),
    }


def card_part(tables: str, argv: list[str] | None) -> str:
    """The arms' tables as a section of the model card (``training.export.card`` nests it)."""
    command = " ".join(["python -m training.gate.evaluate", *(argv if argv is not None else sys.argv[1:])])
    return ("## Can \"not lung\" mean organ rather than lab? The tissue-gate arms\n"
            "Every abstention arm of issue 20 through the same fields as the table above (colour check, the arm's "
            "check, confidence floor), % of fields refused with 95% bootstrap intervals by image; three seeds where "
            "an arm trains (rates: mean; constraints: worst seed). Gates with external organs as negatives are "
            "reported on each organ from a fit without it. Design and reading: `docs/tissue-gate.md`.\n"
            f"`{command}` (after `python -m training.gate.features` and `python -m training.gate.finetune`)\n\n"
            + tables)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Measure the tissue-gate arms (issue 20).")
    parser.add_argument("--cache", type=Path, default=Path(".cache/tissue_gate"))
    parser.add_argument("--model", type=Path, default=Path("hub_model"))
    parser.add_argument("--external", type=Path, default=Path("../shared/data/external-he"))
    parser.add_argument("--out", type=Path, default=Path("runs/tissue_gate"))
    parser.add_argument("--arm", action="append", help="substring of the arms to run (repeatable; default: all)")
    parser.add_argument("--report", type=Path, help="also write the tables as a model-card part (e.g. hub_model/tissue_gate.md, "
                                                    "shown under 'Where this model fails' by training.export.card)")
    args = parser.parse_args(argv)
    ctx = Context(args.cache, args.model, args.external)
    arms = build_arms(ctx)
    chosen = [n for n in arms if n.startswith("current") or not args.arm or any(a in n for a in args.arm)]
    rows = []
    for name in chosen:
        variant, seeded, make = arms[name]
        colour = "colour_ok_normalised" if "colour check on the normalised" in name else "colour_ok"
        needs = [f"test@{variant.format(seed=s)}" for s in (SEEDS if seeded else [0])] if variant else []
        needs += [f"colon-shifted-s{s}" + (f"@{variant.format(seed=s)}" if variant else "") for s in SEEDS
                  if seeded and (not variant or "gate" in name)]
        if any(k not in ctx.data for k in needs):
            print(f"skipped (cache incomplete): {name}", flush=True)
            continue
        rows.append(measure(ctx, name, variant, seeded, make, colour))
        print(f"done: {name}", flush=True)
    decision = table.judge(rows)
    text = (table.main_table(rows) + "\n" + table.shift_table(rows) + "\n" + table.whole_table(rows)
            + f"\nChosen by the declared rule: {decision or 'keep current'}\n")
    if args.report:
        args.report.write_text(card_part(text, argv))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gate.json").write_text(json.dumps({"rows": rows, "decision": decision}, indent=1, default=str) + "\n")
    (args.out / "gate.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
