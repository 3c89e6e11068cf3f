"""Stress suite: how a model behaves when the slides come from somewhere else.

For every model given, one table row per image set (built by ``training.data.image_sets``):
LC25000's grouped TEST split re-stained towards other labs' palettes, zoomed out (0.5x, 0.33x),
blurred and JPEG-compressed; TCGA lung tiles (another lab: must not be refused); non-lung H&E of
organs the model never saw; natural photos re-coloured towards H&E. Per set: accuracy, cancer
tiles called benign WITHOUT abstaining, and the abstained share (colour check, confidence floor
and, where the model has one, the feature-space OOD score). Nothing is fitted on any of these sets.

External images are brought to the training scale first, as serving does: the nucleus-size
estimate of ``imageclf.core.scale`` (reference curves from TRAIN tiles), then cut into 224 px fields.
Each model is judged as the Space serves it (``imageclf.model.predictor.Predictor``); the results go
to ``stress.json`` and, as Markdown tables, ``stress.md``.

Example:
    python -m training.evaluation.stress --model hub_model --model runs/densenet/model \\
        --data ../shared/data/lc25000-lung-224 --manifest training/splits/lc25000-lung-grouped.csv \\
        --external ../shared/data/external-he --out runs/stress
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imageclf.core.refusal import Reason
from imageclf.model.predictor import Predictor
from training.calibration.scale_reference import train_scale_reference
from training.data.image_sets import ImageSet, external_sets, external_sources, lc25000_sets, photo_set


# The models, as the Space serves them ----------------------------------------------------------

@dataclass
class Subject:
    """A model folder as the Space serves it: ``imageclf.model.predictor.Predictor`` (same checks, same order)."""

    name: str
    predictor: object

    @property
    def labels(self) -> list[str]:
        return list(self.predictor.class_ids)

    @property
    def benign(self) -> list[str]:
        return list(self.predictor.model_config.benign_classes)


def load_subject(path: Path, *, name: str | None = None) -> Subject:
    """Load ``path`` (a model folder) exactly as the Space does (schema, safety check, feature check)."""

    folder = path if path.is_dir() else path.parent
    return Subject(name or folder.name, Predictor(folder))


def judge(subject: Subject, images: np.ndarray, *, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray, dict]:
    """(probabilities, abstained mask, abstention shares by reason) for uint8 fields, through the
    serving code's own per-field decision (colour check, feature check, confidence floor)."""

    table = subject.predictor.classify_fields(list(images), batch=batch_size)   # the one field loop
    probabilities = table.probabilities
    abstained = ~table.answered
    why = np.array([code or "" for code in table.codes()])   # grouped by code, never by sentence
    reasons = {"colour": float(np.mean(why == Reason.COLOUR.value)),
               "feature_ood": float(np.mean(why == Reason.FEATURE.value)),
               "organ": float(np.mean(why == Reason.ORGAN.value)),
               "confidence": float(np.mean(why == Reason.CONFIDENCE.value))}
    return probabilities, abstained, reasons


def row(subject: Subject, image_set: ImageSet) -> dict:
    """One table row: accuracy, cancer called benign without abstaining, abstained share."""
    probabilities, abstained, reasons = judge(subject, image_set.images)
    out = {"model": subject.name, "set": image_set.name, "kind": image_set.kind, "n": len(image_set.images),
           "abstained": float(abstained.mean()), **{f"abstained_{k}": v for k, v in reasons.items()}}
    if image_set.labels is not None:
        predicted = np.array(subject.labels)[probabilities.argmax(axis=1)]
        truth = np.array(image_set.labels)
        cancer = ~np.isin(truth, subject.benign)
        called_benign = np.isin(predicted, subject.benign)
        out["accuracy"] = float((predicted == truth).mean())
        out["accuracy_answered"] = float((predicted == truth)[~abstained].mean()) if (~abstained).any() else None
        out["cancer_called_benign_unabstained"] = (float((called_benign & ~abstained)[cancer].mean())
                                                   if cancer.any() else None)
    return out


def whole_images(subject: Subject, root: Path) -> list[dict]:
    """Each external image as a user would send it: the Space's whole-image rule (scale ``auto``,
    fields, averaged verdict; ``imageclf.core.rule``), one verdict per image, by source."""
    by_source: dict[str, list] = {}
    for source, path in external_sources(root):
        by_source.setdefault(source, []).append((path, subject.predictor.analyze(path, scale="auto")))
    rows = []
    for source, answers in by_source.items():
        answered = [(p, a) for p, a in answers if not a.abstained]
        row_ = {"model": subject.name, "set": source, "images": len(answers),
                "abstained": 1 - len(answered) / len(answers)}
        if source == "lung-tcga":
            row_["right_of_answered"] = (float(np.mean([a.label == p.parent.name for p, a in answered]))
                                         if answered else None)
            row_["cancer_called_benign"] = float(np.mean([a.label in subject.benign for _, a in answers
                                                          if not a.abstained]) if answered else 0.0)
        rows.append(row_)
    return rows


# The tables -----------------------------------------------------------------------------------

def _percent(value) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def whole_markdown(rows: list[dict]) -> str:
    """The whole-image verdicts as Markdown, one line per (source, model)."""
    lines = ["| source | model | images | abstained | right (of answered) | called benign (of answered) |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['set']} | {r['model']} | {r['images']} | {_percent(r['abstained'])} | "
              f"{_percent(r.get('right_of_answered'))} | {_percent(r.get('cancer_called_benign'))} |" for r in rows]
    return "\n".join(lines) + "\n"


def markdown(rows: list[dict]) -> str:
    """The table as Markdown, one line per (set, model)."""
    lines = ["| set | model | n | accuracy | cancer called benign, not abstained (of all cancer tiles) | abstained "
             "| why (colour / feature OOD / tissue gate / confidence) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['set']} | {r['model']} | {r['n']} | {_percent(r.get('accuracy'))} | "
                     f"{_percent(r.get('cancer_called_benign_unabstained'))} | {_percent(r['abstained'])} | "
                     f"{_percent(r['abstained_colour'])} / {_percent(r['abstained_feature_ood'])} / "
                     f"{_percent(r.get('abstained_organ', 0.0))} / {_percent(r['abstained_confidence'])} |")
    return "\n".join(lines) + "\n"


# The command ----------------------------------------------------------------------------------

def stress_sets(*, data: Path, manifest: Path, external: Path, per_class: int = 100, photos: int = 60, seed: int = 0,
                scale_reference=None) -> list[ImageSet]:
    """Every image set of the table, in its order (also what ``precision_rule`` compares runtimes on)."""
    ext, palettes = external_sets(external, scale_reference=scale_reference)
    sets = lc25000_sets(data, manifest, per_class=per_class, palettes=palettes, seed=seed) + ext
    photo = photo_set(data, manifest, n=photos, seed=seed)
    return sets + ([photo] if photo is not None else [])


def run(*, models: list[Path], data: Path, manifest: Path, external: Path, out: Path, per_class: int = 100,
        photos: int = 60, seed: int = 0, scale_reference=None) -> list[dict]:
    """Build every set once, judge every model on it, write ``stress.json`` and ``stress.md``."""

    sets = stress_sets(data=data, manifest=manifest, external=external, per_class=per_class, photos=photos, seed=seed,
                       scale_reference=scale_reference)
    subjects = [load_subject(m) for m in models]
    rows = [row(subject, image_set) for image_set in sets for subject in subjects]
    out.mkdir(parents=True, exist_ok=True)
    whole = [r for subject in subjects for r in whole_images(subject, external)]
    (out / "stress.json").write_text(json.dumps({"fields": rows, "whole_images": whole}, indent=2) + "\n")
    (out / "stress.md").write_text(markdown(rows) + "\nWhole images through the Space's rule (scale auto, "
                                   "fields, averaged verdict), one verdict per image:\n\n" + whole_markdown(whole))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Stress suite: stain, scale, blur, JPEG, other labs, non-lung.")
    parser.add_argument("--model", type=Path, action="append", required=True, help="model folder (repeatable)")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/lc25000-lung-224"))
    parser.add_argument("--manifest", type=Path, default=Path("training/splits/lc25000-lung-grouped.csv"))
    parser.add_argument("--external", type=Path, default=Path("../shared/data/external-he"))
    parser.add_argument("--per-class", type=int, default=100, help="test tiles per class")
    parser.add_argument("--photos", type=int, default=60)
    parser.add_argument("--no-scale-estimate", action="store_true", help="fixed 0.7x for external images")
    parser.add_argument("--out", type=Path, default=Path("runs/stress"))
    args = parser.parse_args(argv)
    reference = None if args.no_scale_estimate else train_scale_reference(args.data, args.manifest)
    rows = run(models=args.model, data=args.data, manifest=args.manifest, external=args.external, out=args.out,
               per_class=args.per_class, photos=args.photos, scale_reference=reference)
    print(markdown(rows))


if __name__ == "__main__":
    main()
