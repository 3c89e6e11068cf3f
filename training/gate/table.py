"""Bootstrap intervals by image, the declared decision rule and the Markdown tables of the measurement.

A few images carry most of the external result (the probe: TCGA per-image refusals 6 6 7 9 1 7 9 9
of 9), so every external or colon rate is resampled by image (or near-duplicate group), never by field.

Example:
    >>> rate, low, high = by_image(refused, images)          # 95% percentile interval
    >>> judge(rows)      # the arm the declared rule picks, or None: keep the current check
"""
from __future__ import annotations

import numpy as np

BOOTSTRAP = 2000


def by_image(values: np.ndarray, units: np.ndarray, *, n: int = BOOTSTRAP, seed: int = 0) -> tuple[float, float, float]:
    """Mean of per-field ``values`` and its 95% bootstrap interval, resampling whole ``units``."""
    values = np.asarray(values, np.float64)
    if not len(values):
        return float("nan"), float("nan"), float("nan")
    keys, index = np.unique(np.asarray(units), return_inverse=True)
    sums = np.bincount(index, weights=values, minlength=len(keys))
    counts = np.bincount(index, minlength=len(keys)).astype(np.float64)
    draws = np.random.default_rng(seed).integers(0, len(keys), (n, len(keys)))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(values.mean()), float(low), float(high)


def pct(value: float | None, digits: int = 0) -> str:
    return "" if value is None or value != value else f"{100 * value:.{digits}f}"


def ci(stat: tuple[float, float, float] | None, digits: int = 0) -> str:
    """"48 [30-66]" from (mean, low, high)."""
    if stat is None:
        return ""
    return f"{pct(stat[0], digits)} [{pct(stat[1], digits)}-{pct(stat[2], digits)}]"


ORGANS = ("nonlung-bladder", "nonlung-brain", "nonlung-breast", "nonlung-colon", "nonlung-kidney",
          "nonlung-prostate", "nonlung-stomach", "nonlung-colorectal-consep", "nonlung-colorectal-kather")
SHIFTS = ("lc25000-test", "restain->tcga-lung", "restain->tcga-other-organs", "restain->colorectal-consep",
          "restain->colorectal-kather", "zoom-0.5x", "zoom-0.33x", "blur-sigma1.5", "jpeg-q30", "lung-tcga")


def main_table(rows: list[dict]) -> str:
    """One line per arm: the figures the declared rule and the targets are about (% of fields)."""
    head = ["arm", "seeds", "TCGA lung fields refused", "TCGA whole images answered /8 (benign when cancer)",
            "LC25000 colon refused", *[o.removeprefix("nonlung-") for o in ORGANS], "tinted photos",
            "ID abstention (test 2258)", "test acc", "ECE", "worst cancer->benign (set)", "rule"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        whole = r["whole_tcga"]
        cells = [r["arm"], str(r["seeds"]), ci(r["refused"]["lung-tcga"]),
                 f"{whole['answered']} ({whole['benign']})", ci(r["refused"]["lc25000-colon"]),
                 *[ci(r["refused"].get(o)) for o in ORGANS], pct(r["refused"]["he-tinted-photos"][0]),
                 ci(r["id_abstention"], 1), pct(r["test_accuracy"], 1), pct(r.get("test_ece"), 2),
                 f"{pct(r['worst_benign'][1], 1)} ({r['worst_benign'][0]})", r["verdict"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def shift_table(rows: list[dict]) -> str:
    """Per arm and shift: cancer called benign without abstaining / abstained (% of fields, worst seed)."""
    lines = ["| arm | " + " | ".join(SHIFTS) + " |", "|---|" + "---|" * len(SHIFTS)]
    for r in rows:
        cells = [f"{pct(r['shifts'][s]['benign'], 1)} / {pct(r['shifts'][s]['abstained'], 1)}" if s in r["shifts"] else ""
                 for s in SHIFTS]
        lines.append(f"| {r['arm']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def whole_table(rows: list[dict]) -> str:
    """Whole images through the served rule: share of images refused per source (mean over seeds)."""
    sources = ["lung-tcga", *ORGANS]
    lines = ["| arm | " + " | ".join(s.removeprefix("nonlung-") for s in sources) + " |",
             "|---|" + "---|" * len(sources)]
    for r in rows:
        lines.append(f"| {r['arm']} | " + " | ".join(pct(r["whole_refused"].get(s)) for s in sources) + " |")
    return "\n".join(lines) + "\n"


def judge(rows: list[dict]) -> str | None:
    """The declared rule: most TCGA lung fields answered, subject to every constraint (the issue's three,
    plus the model targets: grouped test accuracy >= 95%, ECE <= 2%, worst seed); None: keep current."""
    current = rows[0]
    others = [k for k in current["refused"] if k != "lung-tcga"]
    best = None
    for r in rows:
        fails = []
        if r["worst_benign"][1] > 0.05:
            fails.append("cancer->benign > 5%")
        if r["id_abstention_worst_seed"] > 0.03:
            fails.append("ID abstention > 3%")
        if r.get("test_accuracy_worst_seed", r.get("test_accuracy", 1.0)) < 0.95:
            fails.append("test accuracy < 95%")
        if r.get("test_ece_worst_seed", r.get("test_ece", 0.0)) > 0.02:
            fails.append("ECE > 2%")
        lower = [k.removeprefix("nonlung-") for k in others if r["refused"][k][0] < current["refused"][k][0] - 1e-9]
        if lower:
            fails.append("organ refusal below today's: " + ", ".join(lower))
        r["verdict"] = "meets" if not fails else "; ".join(fails)
        if r is not current and not fails and r["refused"]["lung-tcga"][0] < current["refused"]["lung-tcga"][0]:
            if best is None or r["refused"]["lung-tcga"][0] < best["refused"]["lung-tcga"][0]:
                best = r
    return None if best is None else best["arm"]
