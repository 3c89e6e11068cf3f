"""Stress suite: how a model behaves when the slides come from somewhere else.

For every model given, one table row per image set: LC25000's grouped TEST split re-stained
towards other labs' palettes (Reinhard transfer to the LAB statistics of each external
source), zoomed out (2x2 and 3x3 same-class mosaics: 0.5x, 0.33x), blurred and JPEG-compressed;
TCGA lung tiles (another lab: must not be refused); non-lung H&E of organs the model never saw;
natural photos re-coloured towards H&E. Per set: accuracy, cancer tiles called benign WITHOUT
abstaining, and the abstained share (colour check, confidence floor and, where the model has
one, the feature-space OOD score). Nothing is fitted on any of these sets.

External images are brought to the training scale first, as serving does: the nucleus-size
estimate of ``imageclf.core.scale`` (reference curves from TRAIN tiles), then cut into 224 px fields.

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

import cv2
import numpy as np

from imageclf.core.refusal import Reason
from imageclf.errors import ModelError
from imageclf.core.imaging import IMAGE_SUFFIXES as SUFFIXES, decode_image, load_model_input
from imageclf.model.predictor import Predictor
from imageclf.core.scale import RGB_FROM_HED, estimate_relative_size
from training.calibration.scale_reference import build_scale_spec, split_tiles
from training.data import lab_shift
from training.data.far_ood import sample_photo_paths
from training.data.samples import read_manifest

HEMATOXYLIN, EOSIN = RGB_FROM_HED[0], RGB_FROM_HED[1]


class StressError(ModelError, ValueError):
    """A model folder or data folder the suite cannot use; the message says which and why."""

# Step 1: the image sets -------------------------------------------------------------------------

def fields(rgb: np.ndarray, *, factor: float, side: int = 224, max_fields: int = 9) -> np.ndarray:
    """Resize ``rgb`` by ``factor`` and cut up to ``max_fields`` non-overlapping ``side`` px fields."""
    h, w = rgb.shape[:2]
    factor = max(factor, side / min(h, w))  # a small image is enlarged to at least one field
    image = cv2.resize(rgb, (max(side, round(w * factor)), max(side, round(h * factor))),
                       interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC)
    rows, cols = image.shape[0] // side, image.shape[1] // side
    top, left = (image.shape[0] - rows * side) // 2, (image.shape[1] - cols * side) // 2
    out = [image[top + r * side:top + (r + 1) * side, left + c * side:left + (c + 1) * side]
           for r in range(rows) for c in range(cols)]
    return np.stack(out[:max_fields])


def he_tint(rgb: np.ndarray) -> np.ndarray:
    """A photo re-coloured as if stained: dark parts haematoxylin purple, the rest eosin pink."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float64)[..., None] / 255.0
    od = (1.0 - grey) ** 1.5 * 1.4 * HEMATOXYLIN + (0.25 + 0.45 * (1 - grey)) * EOSIN
    return np.clip(255.0 * np.exp(-od), 0, 255).astype(np.uint8)


def tinted_photos(paths: list[Path], *, n: int, palette: tuple, seed: int = 0) -> np.ndarray:
    """``n`` random crops of photos, half tinted with :func:`he_tint`, half Reinhard-matched to ``palette``."""
    rng = np.random.default_rng(seed)
    photos = [decode_image(p) for p in paths]
    out = []
    for i in range(n):
        photo = photos[i % len(photos)]
        crop = int(rng.integers(min(photo.shape[:2]) // 3, min(photo.shape[:2]) + 1))
        y, x = (int(rng.integers(0, photo.shape[k] - crop + 1)) for k in (0, 1))
        tile = cv2.resize(photo[y:y + crop, x:x + crop], (224, 224), interpolation=cv2.INTER_AREA)
        out.append(he_tint(tile) if i % 2 == 0 else lab_shift.reinhard(tile, *palette))
    return np.stack(out)


@dataclass
class ImageSet:
    """Images of one stress condition; ``labels`` are class names, or None for non-lung sets."""

    name: str
    images: np.ndarray
    labels: list[str] | None
    kind: str  # "lung" (accuracy counts) or "refuse" (should be abstained)


def external_sources(root: Path) -> list[tuple[str, Path]]:
    """(source name, image path) of ``external-he/``: TCGA lung tiles, then each non-lung organ."""
    sources = [("lung-tcga", p) for p in sorted((root / "lung-tcga").glob("*/*"))]
    sources += [(f"nonlung-{p.parent.name}", p) for p in sorted((root / "nonlung").glob("*/*"))]
    return [(name, path) for name, path in sources if path.suffix.lower() in SUFFIXES]


def train_scale_reference(data: Path, manifest: Path):
    """The nucleus-scale reference of the TRAIN tiles, as the exported model's config carries it."""
    return build_scale_spec(split_tiles(data, manifest, split="train"), field_of_view_px=None, mosaics=12).reference


def photo_set(data: Path, manifest: Path, *, n: int = 60, seed: int = 0) -> ImageSet | None:
    """Natural photos tinted to the training tiles' H&E palette (to be refused); None without photos."""
    paths = sample_photo_paths()
    if not (paths and n):
        return None
    return ImageSet("he-tinted-photos", tinted_photos(paths, n=n, palette=lab_stats_of(data, manifest), seed=seed),
                    None, "refuse")


def external_sets(root: Path, *, scale_reference=None, default_factor: float = 0.7) -> tuple[list[ImageSet], dict]:
    """TCGA lung tiles and each non-lung source as fields at the training scale; palettes by source."""
    sets = []
    grouped: dict[str, tuple[list, list]] = {}
    for name, path in external_sources(root):
        rgb = decode_image(path)
        relative = estimate_relative_size(rgb, scale_reference)[0] if scale_reference is not None else None
        factor = float(np.clip(1.0 / relative, 0.25, 4.0)) if relative else default_factor
        cut = fields(rgb, factor=factor)
        images, labels = grouped.setdefault(name, ([], []))
        images.append(cut)
        labels += [path.parent.name] * len(cut)
    by_lab: dict[str, list] = {}
    for name, (images, labels) in grouped.items():
        images = np.concatenate(images)
        by_lab.setdefault(palette_name(name), []).append(images)
        lung = name == "lung-tcga"
        sets.append(ImageSet(name, images, labels if lung else None, "lung" if lung else "refuse"))
    palettes = {lab: lab_shift.lab_stats(np.concatenate(parts)) for lab, parts in sorted(by_lab.items())}
    return sets, palettes


def palette_name(source: str) -> str:
    """Which lab palette a source belongs to: MoNuSeg's TCGA organs share one, the others are their own."""
    if source == "lung-tcga":
        return "tcga-lung"
    return source.removeprefix("nonlung-") if "colorectal" in source else "tcga-other-organs"


def lc25000_sets(data: Path, manifest: Path, *, per_class: int, palettes: dict, seed: int = 0,
                 split: str = "test") -> list[ImageSet]:
    """One split of the grouped manifest (``per_class`` tiles per class), clean and under each shift."""
    rng = np.random.default_rng(seed)
    test = [s for s in read_manifest(manifest) if s.split == split]
    by_class: dict[str, np.ndarray] = {}
    for label in sorted({s.label for s in test}):
        rows = [s for s in test if s.label == label]
        pick = rng.choice(len(rows), min(per_class, len(rows)), replace=False)
        by_class[label] = np.stack([load_model_input(data / rows[i].path, size=(224, 224)) for i in sorted(pick)])
    images = np.concatenate(list(by_class.values()))
    labels = [label for label, tiles in by_class.items() for _ in tiles]
    sets = [ImageSet(f"lc25000-{split}", images, labels, "lung")]
    for source, palette in palettes.items():
        sets.append(ImageSet(f"restain->{source}", np.stack([lab_shift.reinhard(t, *palette) for t in images]), labels, "lung"))
    for k, name in ((2, "zoom-0.5x"), (3, "zoom-0.33x")):
        mosaics = [lab_shift.mosaic([tiles[j] for j in rng.choice(len(tiles), k * k)]) for tiles in by_class.values()
                   for _ in range(len(tiles))]
        sets.append(ImageSet(name, np.stack(mosaics), labels, "lung"))
    sets.append(ImageSet("blur-sigma1.5", np.stack([lab_shift.blur(t, 1.5) for t in images]), labels, "lung"))
    sets.append(ImageSet("jpeg-q30", np.stack([lab_shift.jpeg(t, 30) for t in images]), labels, "lung"))
    return sets


def lab_stats_of(data: Path, manifest: Path, *, split: str = "train", n: int = 300, seed: int = 0) -> tuple:
    """LAB mean/std of ``n`` tiles of one split: the training palette (for tinting photos)."""
    rows = [s for s in read_manifest(manifest) if s.split == split]
    pick = np.random.default_rng(seed).choice(len(rows), min(n, len(rows)), replace=False)
    return lab_shift.lab_stats([load_model_input(data / rows[i].path, size=(224, 224)) for i in pick])


# Step 2: the models -----------------------------------------------------------------------------

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

    results = [r for i in range(0, len(images), batch_size)
               for r in subject.predictor.predict_batch(list(images[i:i + batch_size]))]
    probabilities = np.array([list(r["probabilities"].values()) for r in results])
    abstained = np.array([r["abstained"] for r in results])
    why = np.array([r["abstain_code"] or "" for r in results])   # grouped by code, never by sentence
    reasons = {"colour": float(np.mean(why == Reason.COLOUR.value)),
               "feature_ood": float(np.mean(why == Reason.FEATURE.value)),
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


def whole_markdown(rows: list[dict]) -> str:
    def cell(v):
        return "" if v is None else f"{100 * v:.1f}%"

    lines = ["| source | model | images | abstained | right (of answered) | called benign (of answered) |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['set']} | {r['model']} | {r['images']} | {cell(r['abstained'])} | "
              f"{cell(r.get('right_of_answered'))} | {cell(r.get('cancer_called_benign'))} |" for r in rows]
    return "\n".join(lines) + "\n"


def markdown(rows: list[dict]) -> str:
    """The table as Markdown, one line per (set, model)."""
    def cell(v):
        return "" if v is None else f"{100 * v:.1f}%"

    lines = ["| set | model | n | accuracy | cancer called benign, not abstained (of all cancer tiles) | abstained "
             "| why (colour / feature OOD / confidence) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['set']} | {r['model']} | {r['n']} | {cell(r.get('accuracy'))} | "
                     f"{cell(r.get('cancer_called_benign_unabstained'))} | {cell(r['abstained'])} | "
                     f"{cell(r['abstained_colour'])} / {cell(r['abstained_feature_ood'])} / {cell(r['abstained_confidence'])} |")
    return "\n".join(lines) + "\n"


def run(*, models: list[Path], data: Path, manifest: Path, external: Path, out: Path, per_class: int = 100,
        photos: int = 60, seed: int = 0, scale_reference=None) -> list[dict]:
    """Build every set once, judge every model on it, write ``stress.json`` and ``stress.md``."""

    ext, palettes = external_sets(external, scale_reference=scale_reference)
    sets = lc25000_sets(data, manifest, per_class=per_class, palettes=palettes, seed=seed) + ext
    photo = photo_set(data, manifest, n=photos, seed=seed)
    sets += [photo] if photo is not None else []
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
