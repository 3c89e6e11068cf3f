"""The licence of trained weights: the training data's terms, as far as they are known.

The project's code is MIT (LICENSE in the project repository); weights are made from the training
data, so their terms are the data's. A dataset whose terms are not recorded here gives
``license: unknown`` and a paragraph telling the reader to check the source.

Example:
    >>> licence_metadata({"training_run": {"data": "lc25000-lung-224"}})["license_name"]
    'lc25000-terms'
"""
from __future__ import annotations

from pathlib import Path

LC25000_TERMS = dict(
    license="other",
    license_name="lc25000-terms",
    license_link="https://github.com/tampapath/lung_colon_image_set",
    # A community copy of the same LC25000 images on the Hub (its `unlicense` tag is the uploader's).
    datasets=["1aurent/LC25000"],
    text="""The weights were trained on images from LC25000 (Borkowski AA, Bui MM, Thomas LB, Wilson CP,
DeLand LA, Mastorides SM. Lung and Colon Cancer Histopathological Image Dataset (LC25000).
arXiv:1912.12142, 2019), lung classes, downscaled to 224 px. The dataset's authors publish no
licence: their repository (https://github.com/tampapath/lung_colon_image_set) gives the download
link and asks users to cite the paper, and the paper calls the images de-identified, HIPAA
compliant and "freely available for download to AI researchers". Nothing is stated about
commercial use or redistribution. These weights come with no more rights than that: use them for
research and education, cite LC25000, and check the dataset's terms yourself before any other use.
The Hub dataset linked in this card's metadata (`1aurent/LC25000`) is a community copy of the same
images, not the authors' release. The code that trained the model is MIT-licensed; that licence
does not cover these weights.""",
)
DATA_TERMS = {"lc25000-lung-224": LC25000_TERMS}  # dataset folder name -> terms


def data_terms(config: dict) -> dict | None:
    data = str((config.get("training_run") or {}).get("data") or "")
    return DATA_TERMS.get(Path(data).name)


def licence_metadata(config: dict) -> dict:
    """`license`, `license_name`, `license_link` and `datasets` for the card's YAML.

    Weights trained on a dataset whose terms are not recorded here get `license: unknown`.
    """
    terms = data_terms(config)
    if terms is None:
        return {"license": "unknown"}
    return {key: terms[key] for key in ("license", "license_name", "license_link", "datasets")}


def licence_text(config: dict) -> str:
    """The card's "Licence" section."""
    terms = data_terms(config)
    if terms is not None:
        return terms["text"]
    return ("The weights were trained on the dataset described under \"Training data\", whose licence terms\n"
            "are not recorded here: check them at the dataset's source before any use beyond research and\n"
            "education. The code that trained the model is MIT-licensed; that licence does not cover these weights.")
