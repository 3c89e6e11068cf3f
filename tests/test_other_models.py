"""The same code path on other datasets: the exported chest-CT and skin models, served by the Space.

The Space is pointed at each exported folder (MODEL_DIR); every label, name, input size, rule and
caveat it shows must come from that folder, and its answer on a real test image must match the
model run in plain Keras.
"""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from gradio_client import Client, handle_file

from imageclf.core.imaging import load_model_input
from imageclf.model.predictor import Predictor
from tests.support.tiny_model import write_tiny_model_folder
from training.data.catalog import describe
from training.data.samples import read_manifest

from .conftest import ROOT, require_dataset
from tests.support.tiny_model import run_space
from tests.support.field_rows import one_field

EXPORTS = ROOT / "training" / "exports"
MODELS = {  # export folder -> (dataset, benign class ids, input unit)
    "chest-ct": ("chest-ct", ["normal"], "slice"),
    "chest-ct-binary": ("chest-ct", ["normal"], "slice"),  # --class-map: three carcinomas -> cancer
    "skin-melanoma": ("skin-melanoma", ["benign"], "image"),
}
SERVED = ["chest-ct", "skin-melanoma"]


def read_folder(name: str) -> tuple[dict, list[str], list[str]]:
    folder = EXPORTS / name
    labels = json.loads((folder / "labels.json").read_text())
    ids = [labels[str(i)]["id"] for i in range(len(labels))]
    return json.loads((folder / "config.json").read_text()), ids, [labels[str(i)]["name"] for i in range(len(labels))]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_export_folder_is_complete_small_and_carries_the_dataset_caveats(name):
    folder = EXPORTS / name
    config, ids, names = read_folder(name)
    dataset, benign, unit = MODELS[name]
    assert {"model.keras", "labels.json", "config.json", "metrics.json", "README.md", "split_manifest.csv",
            "confusion_matrix.png", "training_curves.png", "reliability.png"} <= {p.name for p in folder.iterdir()}
    assert sum(p.stat().st_size for p in folder.iterdir()) < 2 * 1024 * 1024
    assert config["labels"] == ids and config["benign_classes"] == benign and config["input_unit"] == unit
    assert config["training_run"]["data"] == dataset and config["data_layout"]["kind"] == "given"
    assert "lung" not in config["domain"].lower() and not any("lung" in n.lower() for n in names)
    card = (folder / "README.md").read_text()
    caveats = describe(dataset).caveats  # e.g. "No patient ids: ..." (training/data/catalog.py)
    assert caveats in card and caveats in config["limitations"]  # the Space's "About this model" panel
    assert "LC25000" not in card and "H&E" not in card
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(metrics["per_class"]) == set(ids) and metrics["cancer_sensitivity"] is not None
    assert f"{100 * metrics['accuracy']:.2f}%" in card


def test_the_space_resizes_whole_images_for_non_tile_models(tmp_path):
    large = np.random.default_rng(0).integers(0, 256, (900, 700, 3), dtype=np.uint8)
    tiles = Predictor(write_tiny_model_folder(tmp_path / "tile")).analyze(large, scale="native")
    whole = Predictor(write_tiny_model_folder(tmp_path / "slice", config_extra={"input_unit": "slice"}))
    answer = whole.analyze(large, scale="native")
    assert not tiles.one_field and tiles.fields.classified > 1
    assert answer.one_field and answer.scale.method.startswith("whole image")
    assert answer.probabilities == pytest.approx(list(one_field(whole, large)["probabilities"].values()))


@pytest.mark.parametrize("name", SERVED)
def test_space_pointed_at_the_export_answers_like_plain_keras(name):
    data = require_dataset(MODELS[name][0])
    folder = EXPORTS / name
    config, ids, names = read_folder(name)
    size = tuple(config["input_size"])
    # The first test images, one per class: pick one plain Keras classifies right.
    model = keras.saving.load_model(folder / "model.keras", compile=False, safe_mode=True)
    test = [s for s in read_manifest(folder / "split_manifest.csv") if s.split == "test"]
    candidates = [next(s for s in test if s.label == cid) for cid in ids]
    probabilities = model.predict(np.stack([load_model_input(data / s.path, size=size) for s in candidates]), verbose=0)
    right = [(s, p) for s, p in zip(candidates, probabilities, strict=True) if ids[int(p.argmax())] == s.label]
    assert right, "the model gets none of the first test images right"
    sample, expected = right[0]

    with run_space(folder) as url:
        top, result = Client(url, verbose=False).predict(handle_file(str(data / sample.path)), api_name="/predict")
    assert list(result["probabilities"]) == ids  # the folder's class ids, in its order
    assert result["label"] == sample.label and result["name"] == names[ids.index(sample.label)]
    np.testing.assert_allclose([result["probabilities"][cid] for cid in ids], expected, atol=1e-4)
    assert {row["label"] for row in top["confidences"]} <= set(names)
    assert top["label"] == names[ids.index(sample.label)]
