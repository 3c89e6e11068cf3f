"""What the training code knows about the bundled datasets: names for people, benign classes, caveats.

Only these descriptions are dataset-specific; everything else works on any class-per-folder
dataset (or one that comes in train/valid/test folders). Unknown datasets get names derived
from folder names and generic wording.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
DEFAULT_DATA = SHARED_DATA / "lc25000-lung-224"


@dataclass(frozen=True)
class DatasetInfo:
    """Human-facing facts about a dataset, written into config.json and the model card.

    Example:
        >>> describe("../shared/data/chest-ct").benign_classes
        ('normal',)
    """

    title: str
    domain: str  # what an in-distribution input looks like, in words
    class_names: dict[str, str] = field(default_factory=dict)
    benign_classes: tuple[str, ...] = ()
    citation: str = ""
    caveats: str = ""
    colour_check: bool = True  # abstain on inputs whose colours are unlike the training images
    # Overrides of training.data.augment.Augmentation that suit this kind of image (before --augment).
    augmentation: dict = field(default_factory=dict)
    # Model card wording; the defaults suit any class-per-folder dataset.
    tags: tuple[str, ...] = ("medical-imaging",)
    unit: str = "image"  # what one model input is: "tile", "slice", "image"
    # Tiles only: source pixels one input side stands for (LC25000: 768 px photographs shrunk to 224);
    # with it, training measures the nucleus-size scale reference (training/calibration/scale_reference.py).
    field_of_view_px: int | None = None
    split_note: str = "split by group, never by image"
    results_note: str = ""
    intended_use: str = "Research and teaching: exploring how a small network separates these classes."
    out_of_scope: str = "images of any other kind"
    source_note: str = "The images come from one public collection; performance elsewhere is unknown."


LUNG = DatasetInfo(
    field_of_view_px=768,
    title="LC25000 lung subset (224 px), split by near-duplicate group",
    domain="H&E-stained lung histopathology tiles",
    class_names={
        "lung_aca": "Lung adenocarcinoma",
        "lung_n": "Benign lung tissue",
        "lung_scc": "Lung squamous cell carcinoma",
    },
    benign_classes=("lung_n",),
    citation=(
        "Borkowski AA et al. Lung and Colon Cancer Histopathological Image Dataset (LC25000). "
        "arXiv:1912.12142, 2019. Groups: Batchkala G, Li B, Rittscher J. LC25000-clean, DEMI @ MICCAI 2024."
    ),
    caveats=(
        "LC25000 was made from only 250 original photographs per class, each expanded to about 20 "
        "tiles by rotations and flips. This model was split by near-duplicate group, never by tile. "
        "The 250 originals per class may still share patients or slides; nothing records that."
    ),
    tags=("histopathology", "medical-imaging"),
    unit="tile",
    split_note="split by near-duplicate group, never by tile",
    results_note=(
        "Tiles in the test split share no original photograph with the training split. Accuracies of\n"
        "99-100% reported elsewhere for this dataset usually come from random tile splits, where a rotated\n"
        "copy of almost every test tile was trained on; they are not comparable with these."),
    intended_use=(
        "Research and teaching: exploring how a small network separates these tissue classes, and as a\n"
        "baseline for leakage-free evaluation on LC25000-style data."),
    out_of_scope=(
        "(other organs, other stains, photos, radiology); whole-slide images without tiling at a\n"
        "comparable magnification"),
    source_note=(
        "The images come from one source and one scanner; performance on other labs,\n"
        "stains or magnifications is unknown and probably lower."),
)

CHEST_CT = DatasetInfo(
    title="Chest CT-Scan images (Kaggle), 1,000 axial slices in the dataset's own train/valid/test split",
    domain="axial chest CT slices like those of the Kaggle Chest CT-Scan dataset",
    class_names={
        "adenocarcinoma": "Adenocarcinoma",
        "large_cell_carcinoma": "Large cell carcinoma",
        "squamous_cell_carcinoma": "Squamous cell carcinoma",
        "normal": "No carcinoma",
        "cancer": "Carcinoma, any type",  # with --class-map ...=cancer (binary model)
    },
    benign_classes=("normal",),
    citation='The public Kaggle dataset "Chest CT-Scan images", as committed in a public GitHub repository.',
    caveats=(
        "No patient ids: slices of one patient may sit in both the training and the test folders, so "
        "test figures can be optimistic. The `normal` slices come from a different source and display "
        "window than the cancer slices (much brighter on average: one threshold on mean brightness, "
        "fitted on train, tells normal from cancer on 95% of test slices), so a model can tell them "
        "apart by acquisition style rather than anatomy: its normal-vs-cancer accuracy says little "
        "about finding cancer in real scans. The three carcinoma types are separated by small image differences on "
        "only 465 training slices."
    ),
    # CT is greyscale: the stain colour check cannot judge it (abstention uses confidence only).
    colour_check=False,
    # Slices have an up and a side: no vertical flips or 90-degree turns; no stain jitter on grey.
    # Stronger brightness/contrast jitter works against (does not remove) the window shortcut.
    augmentation={"flips": False, "rot90": False, "free_rotation_degrees": 10.0, "hed_jitter": 0.0,
                  "colour_jitter": 0.15},
    tags=("radiology", "computed-tomography", "medical-imaging"),
    unit="slice",
    split_note="the dataset's own test folder; no patient ids, so patients may overlap with train",
    results_note=("The test folder is the dataset's own. Without patient ids it cannot be checked that no\n"
                  "patient appears in both train and test."),
    intended_use="Research and teaching: a second domain for the same training code; not a CT reader.",
    out_of_scope="(histology, photos, X-rays, other CT windows or scanners); whole CT volumes",
    source_note=("The normal slices and the cancer slices come from different sources and windows;\n"
                 "performance on other scanners, windows or hospitals is unknown and probably much lower."),
)

SKIN_MELANOMA = DatasetInfo(
    title="Melanoma Skin Cancer Dataset of 10000 Images (Kaggle, ISIC archive), 2,000-image training subset",
    domain="dermoscopic photographs of skin lesions",
    class_names={"benign": "Benign lesion", "malignant": "Malignant lesion"},
    benign_classes=("benign",),
    citation=('The public Kaggle dataset "Melanoma Skin Cancer Dataset of 10000 Images" (ISIC archive '
              "images), as committed in a public GitHub repository."),
    caveats=(
        "No lesion or patient ids: near-duplicate photographs of one lesion may sit in both the "
        "training and the test folder, so test figures can be optimistic. The validation split was "
        "carved at random (seeded, stratified) from the training folder, so it may share lesions with "
        "training too. The training folder is a random 1,000 per class of the original 5,000 / 4,605 images."
    ),
    augmentation={"hed_jitter": 0.0},  # lesions have no 'up'; the colours are skin, not stains
    tags=("dermatology", "dermoscopy", "medical-imaging"),
    split_note="the dataset's own test folder; no lesion ids, so lesions may overlap with train",
    results_note=("The test folder is the dataset's own. Without lesion ids it cannot be checked that no\n"
                  "lesion appears in both train and test."),
    intended_use="Research and teaching: a second domain for the same training code; not a skin-cancer screener.",
    out_of_scope="(clinical close-ups, histology, radiology, other skin conditions)",
    source_note=("The images come from one archive (ISIC);\n"
                 "performance on other cameras, clinics or skin types is unknown and probably lower."),
)

KNOWN: dict[str, DatasetInfo] = {
    "lc25000-lung-224": LUNG,
    "chest-ct": CHEST_CT,
    "skin-melanoma": SKIN_MELANOMA,
}


def describe(root: str | Path) -> DatasetInfo:
    """The known description of the dataset at ``root``, or a generic one."""
    name = Path(root).resolve().name
    if name in KNOWN:
        return KNOWN[name]
    return DatasetInfo(title=name, domain=f"images like those in the {name} dataset")


def human_name(class_id: str, info: DatasetInfo) -> str:
    """A readable class name: the dataset's own, else the folder name tidied up."""
    return info.class_names.get(class_id) or class_id.replace("_", " ").strip().capitalize()
