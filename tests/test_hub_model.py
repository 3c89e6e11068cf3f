"""The committed hub_model/: the files a Hub user downloads keep their promises."""
from __future__ import annotations

import hashlib
import json
import zipfile

import keras
import numpy as np
import pytest
from huggingface_hub import ModelCard

from imageclf.core.imaging import load_model_input
from imageclf.core.refusal import AbstainRule
from imageclf.model.predictor import Predictor
from training.data.samples import manifest_sha256, read_manifest

from .conftest import HUB_MODEL, ROOT
from tests.support.field_rows import one_field

CONFIG = json.loads((HUB_MODEL / "config.json").read_text())
METRICS = json.loads((HUB_MODEL / "metrics.json").read_text())


def test_model_is_within_size_builtin_only_and_calibrated():
    assert (HUB_MODEL / "model.keras").stat().st_size <= 40_000_000   # DenseNet121: about 30 MB
    with zipfile.ZipFile(HUB_MODEL / "model.keras") as archive:
        graph = archive.read("config.json").decode()
    assert '"Lambda"' not in graph and "custom_objects" not in graph
    model = keras.saving.load_model(HUB_MODEL / "model.keras", compile=False, safe_mode=True)
    assert model.input.dtype == "uint8" and tuple(model.input.shape[1:]) == (*CONFIG["input_size"], 3)
    temperature = model.get_layer("temperature")
    assert temperature.scale == pytest.approx(1 / CONFIG["calibration"]["temperature"])
    assert model.layers[-1].name == "probabilities"


def test_config_names_the_manifest_that_trained_it_and_an_abstain_rule():
    assert CONFIG["training_manifest_sha256"] == manifest_sha256(HUB_MODEL / "split_manifest.csv")
    assert manifest_sha256(ROOT / "training" / "splits" / "lc25000-lung-grouped.csv") == \
        CONFIG["training_manifest_sha256"]
    rule = AbstainRule.from_dict(CONFIG["abstain"])
    assert rule.uses_colour and rule.uses_softmax and 0 < rule.min_confidence < 1
    assert len(read_manifest(HUB_MODEL / "split_manifest.csv")) == 15000


def test_card_metadata_comes_from_metrics_json():
    card = ModelCard.load(HUB_MODEL / "README.md")
    assert card.data.library_name == "keras" and card.data.pipeline_tag == "image-classification"
    values = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert values["accuracy"] == METRICS["accuracy"] and values["f1"] == METRICS["macro_f1"]
    assert f"{100 * METRICS['accuracy']:.2f}%" in card.text


@pytest.mark.slow
def test_real_tiles_answered_and_blank_tile_refused(lung_data):
    predictor = Predictor(HUB_MODEL)
    tile = load_model_input(lung_data / "lung_n" / "lungn10.jpeg", size=tuple(CONFIG["input_size"]))
    answer = one_field(predictor, tile)
    assert not answer["abstained"] and answer["label"] == "lung_n"
    assert sum(answer["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    blank = one_field(predictor, np.full((224, 224, 3), 250, np.uint8))
    assert blank["abstained"] and blank["abstain_reason"]


@pytest.mark.slow
def test_the_feature_check_is_pinned_and_served():
    block = CONFIG["feature_ood"]
    params = HUB_MODEL / block["params_file"]
    assert hashlib.sha256(params.read_bytes()).hexdigest() == block["params_sha256"]
    predictor = Predictor(HUB_MODEL)
    assert predictor.feature_check is not None and predictor.feature_check.threshold == block["threshold"]
    # Pixel noise in H&E colours is not tissue: the feature check (or the colour check) refuses it.
    rng = np.random.default_rng(0)
    noise = np.clip(rng.normal((200, 120, 190), 40, (224, 224, 3)), 0, 255).astype(np.uint8)
    assert one_field(predictor, noise)["abstained"]
