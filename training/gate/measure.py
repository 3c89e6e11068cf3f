"""Measuring one tissue-gate arm: its refusals through the served per-field order and whole-image rule.

``Context`` holds the cached sets of ``training.gate.features`` (and ``training.gate.finetune``), the
served model's rule and the whole-image plans; ``measure`` turns one arm's refusals (per seed) into a
row of the arms table: rates averaged over seeds with bootstrap intervals by image, the worst seed
for the constraints.

Example:
    >>> ctx = Context(Path(".cache/tissue_gate"), Path("hub_model"), Path("../shared/data/external-he"))
    >>> row = measure(ctx, "current", "", False, lambda seed: apply(ctx, "", ctx.served.refuses))
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from imageclf.core import rule
from imageclf.core.field_table import FieldTable
from imageclf.core.refusal import Reason
from imageclf.model.feature_check import normalise
from imageclf.model.predictor import Predictor
from training.calibration.feature_ood import load_params
from training.calibration.temperature import expected_calibration_error
from training.data import image_sets
from training.gate import table
from training.gate.arms import MahalanobisCheck, reasons
from training.gate.features import SEEDS

EVAL = ("test", "stress", "external", "photos", "whole", "colon", "farood")


class Context:
    """The cached sets, the served model's rule and the whole-image plans."""

    def __init__(self, cache: Path, model: Path, external: Path):
        self.data = {p.stem: dict(np.load(p, allow_pickle=False)) for p in sorted(cache.glob("*.npz"))
                     if not p.stem.endswith(".tmp")}
        self.predictor = Predictor(model, runtime="keras")
        self.spec = self.predictor.spec
        self.min_confidence = float(self.spec.refusal.abstain.min_confidence)
        self.classes = list(self.spec.class_ids)
        self.benign = [self.classes.index(c) for c in self.predictor.model_config.benign_classes]
        self.served = MahalanobisCheck.served(load_params(model), self.spec.refusal.feature_threshold)
        self.plans = {str(p.relative_to(external)): rule.plan(self.predictor.request(p, "auto"), self.spec)
                      for _, p in image_sets.external_sources(external)}
        self.train_mean = normalise(self.data["train"]["features"]).mean(axis=0)
        self.memo: dict = {}

    def get(self, key: str, variant: str = "") -> dict[str, np.ndarray]:
        return self.data[f"{key}@{variant}" if variant else key]


def abstained_by_set(ctx: Context, variant: str, refusals: dict, colour: str = "colour_ok") -> dict[str, np.ndarray]:
    """Per evaluated cache: one served-order refusal code per field (``colour``: which colour verdict)."""
    return {key: reasons(ctx.get(key, variant)[colour], refusals[key], ctx.get(key, variant)["probabilities"],
                         ctx.min_confidence) for key in EVAL if key != "whole"}


def whole_images(ctx: Context, variant: str, refused: np.ndarray, colour: str = "colour_ok") -> dict[str, tuple]:
    """Each external image through the served rule: (abstained, label), the arm's check in the check's place.
    With ``colour="colour_ok_normalised"`` the colour check judges the normalised fields: it then rides
    in the check's place too (same verdicts; only the wording of the reason would differ)."""
    d = ctx.get("whole", variant)
    colour_ok = d["colour_ok"] if colour == "colour_ok" else np.ones(len(refused), bool)
    refused = refused if colour == "colour_ok" else refused | ~d[colour]
    codes = reasons(colour_ok, refused, d["probabilities"], ctx.min_confidence)
    out = {}
    for image, image_plan in ctx.plans.items():
        rows = np.flatnonzero(d["image"] == image)
        table = None
        if image_plan.fields is not None:
            if len(rows) != len(image_plan.picked):
                raise ValueError(f"{image}: {len(rows)} cached fields, the rule cut {len(image_plan.picked)}.")
            fields = image_plan.fields
            table = FieldTable(fields.boxes, fields.tissue, d["probabilities"][rows].astype(np.float64),
                               tuple(Reason(c) if c else None for c in codes[rows]))
        analysis = rule.conclude(image_plan, table, ctx.spec)
        out[image] = (analysis.abstained, analysis.label, analysis.abstain_code)
    return out


def measure(ctx: Context, name: str, variant: str, seeded: bool, make: Callable, colour: str = "colour_ok") -> dict:
    """One arm's row: rates averaged over seeds, intervals by image, the worst seed for the constraints.
    ``variant`` may name a per-seed cache (``"ft{seed}"``: arm 5's fine-tuned models)."""
    seeds = list(SEEDS) if seeded else [None]
    runs = []
    for seed in seeds:
        v = variant.format(seed=seed)
        refusals = make(seed)
        runs.append((v, abstained_by_set(ctx, v, refusals, colour), whole_images(ctx, v, refusals["whole"], colour)))
    mean = {k: np.mean([(codes[k] != "") for _, codes, _ in runs], axis=0) for k in runs[0][1]}
    first = runs[0][0]
    ext, stress, test = ctx.get("external", first), ctx.get("stress", first), ctx.get("test", first)
    refused = {s: table.by_image(mean["external"][ext["set"] == s], ext["image"][ext["set"] == s])
               for s in np.unique(ext["set"])}
    refused["lc25000-colon"] = table.by_image(mean["colon"], ctx.get("colon")["group"])
    refused["he-tinted-photos"] = table.by_image(mean["photos"], ctx.get("photos")["image"])
    shifts = {}
    for name_, key in [(s, "stress") for s in np.unique(stress["set"])] + [("lung-tcga", "external")]:
        rows = ctx.get(key, first)["set"] == name_
        truth = np.array([ctx.classes.index(c) for c in ctx.get(key, first)["label"][rows]])
        cancer = ~np.isin(truth, ctx.benign)
        benign = [float((np.isin(ctx.get(key, v)["probabilities"][rows].argmax(axis=1), ctx.benign)
                         & (codes[key][rows] == ""))[cancer].mean()) for v, codes, _ in runs]
        shifts[name_] = {"benign": max(benign), "abstained": max(float((codes[key][rows] != "").mean()) for _, codes, _ in runs)}
    worst = max(shifts.items(), key=lambda kv: kv[1]["benign"])
    truth = np.array([ctx.classes.index(c) for c in test["label"]])
    accuracy = [float((ctx.get("test", v)["probabilities"].argmax(axis=1) == truth).mean()) for v, _, _ in runs]
    eces = [expected_calibration_error(ctx.get("test", v)["probabilities"], truth) for v, _, _ in runs]
    whole_refused, answered, benign_whole, codes = {}, [], [], []
    for _, _, verdicts in runs:
        tcga = [v for k, v in verdicts.items() if k.startswith("lung-tcga/")]
        answered.append(sum(not a for a, _, _ in tcga))
        benign_whole.append(sum((not a) and label in [ctx.classes[i] for i in ctx.benign] for a, label, _ in tcga))
        codes.append(sorted(str(c) for a, _, c in tcga if a))
    for source in {k.split("/")[0] if k.startswith("lung-tcga") else "nonlung-" + k.split("/")[1] for k in ctx.plans}:
        prefix = "lung-tcga/" if source == "lung-tcga" else f"nonlung/{source.removeprefix('nonlung-')}/"
        whole_refused[source] = float(np.mean([a for _, _, v in runs for k, (a, _, _) in v.items() if k.startswith(prefix)]))
    spread = f"{min(answered)}-{max(answered)}" if min(answered) != max(answered) else str(answered[0])
    return {"arm": name, "seeds": len(seeds), "refused": refused, "shifts": shifts,
            "worst_benign": (worst[0], worst[1]["benign"]),
            "id_abstention": table.by_image(mean["test"], test["group"]),
            "id_abstention_worst_seed": max(float((codes["test"] != "").mean()) for _, codes, _ in runs),
            "test_accuracy": float(np.mean(accuracy)), "test_accuracy_worst_seed": min(accuracy),
            "test_ece": float(np.mean(eces)), "test_ece_worst_seed": max(eces),
            "whole_tcga": {"answered": spread, "benign": max(benign_whole), "per_seed": answered, "refusal_codes": codes},
            "whole_refused": whole_refused}
