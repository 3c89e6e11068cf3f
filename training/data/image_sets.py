"""Image sets for the stress suite and the transfer recipe: one split under lab shifts, other labs, photos.

Each builder returns :class:`ImageSet` objects (uint8 fields of 224 px, class names or None):

- :func:`lc25000_sets`: a few tiles per class of one manifest split, clean, re-stained towards each
  external lab's palette (Reinhard transfer to the LAB statistics of each source), zoomed out
  (2x2 and 3x3 same-class mosaics: 0.5x, 0.33x), blurred and JPEG-compressed;
- :func:`external_sets`: ``external-he/``'s TCGA lung tiles (another lab: must not be refused) and
  non-lung H&E of organs the model never saw, cut into fields at the training scale (the
  nucleus-size estimate of ``imageclf.core.scale``, against a reference measured on TRAIN tiles);
- :func:`photo_set`: natural photos re-coloured towards H&E (to be refused). The photos are the
  sample photos shipped inside installed packages (:func:`sample_photo_paths`), so this set may
  change with a library upgrade; it is only ever measured (the far-OOD images of
  ``training.data.far_ood`` are generated instead).

The stress suite fits nothing on these sets; the transfer recipe fits its temperature and chooses its
policy and feature-check settings on the shifted VALIDATION sets only (``split="val"``), never on the
test or external ones.

Example:
    >>> ext, palettes = external_sets(Path("../shared/data/external-he"), scale_reference=reference)
    >>> sets = lc25000_sets(data, manifest, per_class=100, palettes=palettes) + ext
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from imageclf.core.imaging import IMAGE_SUFFIXES, decode_image, load_model_input
from imageclf.core.scale import RGB_FROM_HED, estimate_relative_size
from training.data import lab_shift
from training.data.samples import read_manifest

HEMATOXYLIN, EOSIN = RGB_FROM_HED[0], RGB_FROM_HED[1]


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
    return [(name, path) for name, path in sources if path.suffix.lower() in IMAGE_SUFFIXES]


def sample_photo_paths() -> list[Path]:
    """Natural photos shipped inside installed packages (no download): matplotlib, Gradio."""
    paths: list[Path] = []
    for module in ("matplotlib", "gradio"):
        try:
            root = Path(__import__(module).__file__).parent
        except ImportError:
            continue
        for folder in ("mpl-data/sample_data", "media_assets/images", "test_data"):
            paths += [p for p in sorted((root / folder).glob("*"))
                      if p.suffix.lower() in {".jpg", ".jpeg"} and p.stat().st_size > 20_000]
    return paths


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
