"""The model card's calibration and abstention wording: temperature, the abstention rule, the feature check.

Built from ``config.json`` and ``metrics.json`` only; ``training.export.card`` places these texts in
the card's "Calibration and abstention" and "Limitations" sections.

Example:
    >>> print(abstention_text(config, metrics, info))      # rule, test rates, out-of-domain table
"""
from __future__ import annotations


def percent(value) -> str:
    """A share as a percentage with two decimals; "n/a" when missing."""
    return "n/a" if value is None else f"{100 * value:.2f}%"


def calibration_text(metrics: dict) -> str:
    """How the probabilities are calibrated, with the test ECE before and after."""
    cal = metrics.get("calibration")
    if not cal:
        return "Probabilities are not calibrated."
    return (f"Probabilities are temperature-scaled (T = {cal['temperature']:.3f}, fitted on the validation split) "
            "by a `Rescaling` layer named `temperature` inside `model.keras`, so every consumer gets calibrated "
            f"probabilities. Expected calibration error (15 bins) on test: {percent(cal['ece_15_bins_test_before'])} "
            f"before, {percent(cal['ece_15_bins_test_after'])} after.\n\n![Reliability diagram](reliability.png)")


_NO_COLOUR_CHECK = ("the images are not stained tissue, so a stain palette says nothing; a confidence floor "
                   "does not recognise unrelated images, see the table")


def abstention_text(config: dict, metrics: dict, info=None) -> str:
    """The abstention rule in words, its test-split rates and the out-of-domain table."""
    rule, report = config.get("abstain"), metrics.get("abstention")
    if not rule or not report:
        return "The model has no abstention rule: it always answers with one of its classes."
    test = report["test"]
    rows = "\n".join(f"| {name.replace('_', ' ')} | {r['images']} | {percent(r['abstained'])} |"
                     for group in ("far_ood", "other_stains") for name, r in report[group].items())
    unit = info.unit if info else "tile"
    floor = f"a floor on the\ncalibrated top probability ({rule.get('min_confidence') or 0:.3f})"
    if not rule.get("min_confidence") and "colour" not in rule["method"]:
        floor += (" that never abstains: the abstention budget (about 1% of the validation images) is less "
                  "than one image")
    palette = "stain" if _histology(info) else "colour"
    checks = (f"a colour check against the training images' {palette} palette and {floor}" if "colour" in rule["method"]
              else f"{floor}; no colour check ({_NO_COLOUR_CHECK})")
    return f"""`config.json` holds an abstention rule (`abstain`, method `{rule['method']}`), fitted on the
validation split: {checks}. The Space applies it and says "not
recognised" instead of a class. Test split: abstains on {percent(test['abstained'])} of {unit}s; accuracy on the
{unit}s it answers {percent(test.get('accuracy_when_answering'))}.

| out-of-domain set (generated, or other bundled datasets; colour and confidence checks) | images | abstained |
| --- | --- | --- |
{rows}{_feature_check_text(config)}"""


def _feature_check_text(config: dict) -> str:
    block = config.get("feature_ood")
    if not block:
        return ""
    return (f"\n\nA third check, `feature_ood` (`{block['method']}`, file `{block['params_file']}`, pinned by "
            f"sha256), measures how far the model's pooled `{block.get('feature_layer', 'features')}` vector of "
            "each field is from every training class (Mahalanobis distance after PCA, fitted on the train "
            f"split; threshold {block['threshold']:.1f}, the 99.5th percentile of validation). Fields beyond it "
            "are refused as unlike the training tissue. The section \"Where this model fails\" measures all "
            "three checks together, on other labs and organs.")


def _histology(info) -> bool:
    return info is None or "histopathology" in info.tags


def abstention_limits(config: dict, info) -> str:
    """What the abstention rule cannot promise, for the Limitations section."""
    if "colour" not in (config.get("abstain") or {}).get("method", ""):
        return (" The abstention rule has no colour check: it abstains only when the model is unsure,\n"
                "and unrelated images often get a confident answer (see the out-of-domain table).")
    if not _histology(info):
        return (" The abstention rule is fitted on this dataset's colours: it refuses blank, noise and\n"
                "graphics images, but not every unrelated photograph or medical image (see the out-of-domain table).")
    return (""" The abstention rule is fitted on this
dataset's colours: real H&E from another lab may be refused, and stains close to H&E
(e.g. immunohistochemistry with a haematoxylin counterstain) are only partly refused.""")
