"""What the training code knows about the bundled datasets: names for people, benign classes.

Only these descriptions are dataset-specific; everything else works on any
class-per-folder dataset. Unknown datasets get names derived from folder names.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DEFAULT_DATA = SHARED_DATA / "lc25000-lung-224"


@dataclass(frozen=True)
class DatasetInfo:
    """Human-facing facts about a dataset, written into config.json and the model card."""

    title: str
    domain: str  # what an in-distribution input looks like, in words
    class_names: dict[str, str] = field(default_factory=dict)
    benign_classes: tuple[str, ...] = ()
    citation: str = ""
    caveats: str = ""
    colour_check: bool = True  # abstain on inputs whose colours are unlike the training images


KNOWN: dict[str, DatasetInfo] = {
    "lc25000-lung-224": DatasetInfo(
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
    ),
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
