"""Issue 26, arm (b) AdaBN: batch-norm statistics of the image's own fields instead of the training ones.

Adaptive batch normalisation (Li et al. 2016) re-estimates every batch-norm layer's mean and variance
on the target domain. Here the target is one image: its fields pass the network together in Keras'
training mode (batch statistics), then the weights (moving statistics included, which that pass would
update) are put back before the next image. What the arm's features feed is the model's own head and
feature check, as served.

Measured on what decides whether it could be served:
- the 8 whole TCGA lung images (the served plan's fields, scale ``auto``): fields refused by the
  feature check, and the whole-image answer of the served rule;
- label shift: LC25000 grouped TEST tiles in single-class batches (9 tiles, like a small image; and
  64), whose accuracy must hold, against the same tiles with the training statistics.

Example:
    python -m training.gate.adabn --model runs/served-before --out runs/adabn
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import keras
import numpy as np

from imageclf.core import rule
from imageclf.core.engine import FieldOutputs
from imageclf.core.field_table import FieldTable
from imageclf.core.refusal import judge_fields
from imageclf.model.predictor import Predictor
from training.data import image_sets
from training.gate.features import split_tiles

BATCHES = (9, 64)


class AdaBN:
    """The model's probabilities and feature scores with each batch's own batch-norm statistics."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor
        model = predictor.model
        self.net = keras.Model(model.inputs, [model.outputs[0], model.get_layer("features").output])
        self.weights = self.net.get_weights()

    def run(self, fields: np.ndarray, *, adapt: bool) -> FieldOutputs:
        probabilities, features = self.net(np.asarray(fields), training=adapt)
        if adapt:   # the training-mode pass moved the moving statistics: put them back
            self.net.set_weights(self.weights)
        check = self.predictor.feature_check
        scores = None if check is None else check.scores(np.asarray(features, np.float32))
        return FieldOutputs(np.asarray(probabilities, np.float64), scores)


def whole_images(adabn: AdaBN, external: Path, *, adapt: bool) -> dict[str, dict]:
    """Each TCGA lung image through the served plan, its fields run together: refused share and verdict."""
    spec, out = adabn.predictor.spec, {}
    for name, path in image_sets.external_sources(external):
        if name != "lung-tcga":
            continue
        image_plan = rule.plan(adabn.predictor.request(path, "auto"), spec)
        if image_plan.fields is None:
            out[path.name] = {"fields": 0, "verdict": image_plan.refusal.code}
            continue
        pixels = image_plan.fields.source.read(0, len(image_plan.fields))
        outputs = adabn.run(pixels, adapt=adapt)
        reasons = tuple(judge_fields(pixels, outputs.probabilities, outputs.feature_scores, spec.refusal))
        fields = image_plan.fields
        table = FieldTable(fields.boxes, fields.tissue, outputs.probabilities, reasons, outputs.feature_scores)
        analysis = rule.conclude(image_plan, table, spec)
        out[f"{path.parent.name}/{path.name}"] = {"fields": len(reasons),
                                                  "refused": float(np.mean([r is not None for r in reasons])),
                                                  "verdict": analysis.label or f"refused: {analysis.abstain_code}"}
    return out


def label_shift(adabn: AdaBN, data: Path, manifest: Path, *, per_class: int | None) -> dict[str, float]:
    """Accuracy of grouped TEST tiles (``per_class`` seeded per class; None: all) in single-class batches,
    with and without adaptation."""
    images, meta = split_tiles(data, manifest, "test", per_class, seed=0)
    classes = list(adabn.predictor.spec.class_ids)
    truth = np.array([classes.index(c) for c in meta["label"]])
    out = {}
    for size in BATCHES:
        for adapt in (False, True):
            right = []
            for label in range(len(classes)):
                rows = np.flatnonzero(truth == label)
                for start in range(0, len(rows), size):
                    batch = rows[start:start + size]
                    probabilities = adabn.run(images[batch], adapt=adapt).probabilities
                    right += list(probabilities.argmax(axis=1) == label)
            out[f"batch {size}, {'AdaBN' if adapt else 'training statistics'}"] = float(np.mean(right))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Issue 26 arm (b): AdaBN on the image's own fields.")
    parser.add_argument("--model", type=Path, required=True, help="a model folder (served with raw pixels)")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/lc25000-lung-224"))
    parser.add_argument("--manifest", type=Path, default=Path("training/splits/lc25000-lung-grouped.csv"))
    parser.add_argument("--external", type=Path, default=Path("../shared/data/external-he"))
    parser.add_argument("--out", type=Path, default=Path("runs/adabn"))
    parser.add_argument("--per-class", type=int, default=None, help="test tiles per class for the label-shift check")
    args = parser.parse_args(argv)
    adabn = AdaBN(Predictor(args.model, runtime="keras"))
    report = {"tcga_whole": {mode: whole_images(adabn, args.external, adapt=mode == "AdaBN")
                             for mode in ("training statistics", "AdaBN")},
              "label_shift_test_accuracy": label_shift(adabn, args.data, args.manifest, per_class=args.per_class)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "adabn.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
