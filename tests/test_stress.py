"""The stress suite (``training.evaluation.stress``, sets from ``training.data.image_sets``) on a tiny setting:
generated tiles, a tiny untrained model, seconds."""
from __future__ import annotations

import csv
import hashlib
import json

import cv2
import keras
import numpy as np
import pytest

from training.calibration import feature_ood
from training.data import image_sets, lab_shift
from training.evaluation import stress

LABELS = ["lung_aca", "lung_n", "lung_scc"]


def write_image(path, rng, size=224, tint=(200, 120, 190)):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.clip(np.array(tint) + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
    cv2.circle(image, (size // 2, size // 2), size // 8, (90, 40, 120), -1)  # a purple 'nucleus'
    cv2.imwrite(str(path), image[..., ::-1])


@pytest.fixture
def tiny_data(tmp_path):
    rng = np.random.default_rng(0)
    data, rows = tmp_path / "lung", []
    for label in LABELS:
        for i in range(4):
            rel = f"{label}/{label}{i}.png"
            write_image(data / rel, rng)
            rows.append([rel, label, f"{label}-{i}", "test" if i < 2 else "train"])
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        csv.writer(handle).writerows([["path", "label", "group", "split"], *rows])
    external = tmp_path / "external"
    write_image(external / "lung-tcga" / "lung_aca" / "a.png", rng, size=500)
    write_image(external / "nonlung" / "colon" / "c.png", rng, size=400, tint=(210, 150, 200))
    write_image(external / "nonlung" / "brain" / "b.png", rng, size=300, tint=(220, 170, 210))
    return data, manifest, external


def tiny_model_folder(folder, *, with_ood: bool):
    """A tiny uint8 -> softmax model with a ``features`` layer, config.json and (optionally) OOD params."""

    keras.utils.set_random_seed(0)
    inputs = keras.Input((224, 224, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, strides=4, activation="relu")(x)
    features = keras.layers.GlobalAveragePooling2D(name="features")(x)
    logits = keras.layers.Dense(3, name="logits")(features)
    model = keras.Model(inputs, keras.layers.Softmax(name="probabilities")(logits))
    folder.mkdir(parents=True)
    model.save(folder / "model.keras")
    config = {"schema_version": 2, "model_name": folder.name, "input_size": [224, 224], "labels": LABELS,
              "benign_classes": ["lung_n"], "model_file": "model.keras",
              "abstain": {"method": "softmax", "min_confidence": 0.2}}
    if with_ood:
        rng = np.random.default_rng(0)
        params = feature_ood.fit(rng.normal(size=(40, 4)), np.arange(40) % 3, dims=2)
        params["threshold"] = np.float32(1.0)
        path = feature_ood.save_params(params, folder, fitted_on="random")
        config["feature_ood"] = {"method": feature_ood.METHOD, "feature_layer": "features", "threshold": 1.0,
                                 "params_file": path.name, "params_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "labels.json").write_text(json.dumps({str(i): {"id": c, "name": c} for i, c in enumerate(LABELS)}))
    return folder


def test_stress_table_on_tiny_setting(tmp_path, tiny_data):
    data, manifest, external = tiny_data
    models = [tiny_model_folder(tmp_path / "plain", with_ood=False), tiny_model_folder(tmp_path / "ood", with_ood=True)]
    rows = stress.run(models=models, data=data, manifest=manifest, external=external, out=tmp_path / "out",
                      per_class=2, photos=4)
    sets = {r["set"] for r in rows}
    assert {"lc25000-test", "zoom-0.5x", "zoom-0.33x", "blur-sigma1.5", "jpeg-q30", "lung-tcga",
            "nonlung-colon", "nonlung-brain", "restain->tcga-lung", "restain->tcga-other-organs"} <= sets
    assert len(rows) == 2 * len(sets) and {r["model"] for r in rows} == {"plain", "ood"}
    for r in rows:
        assert 0.0 <= r["abstained"] <= 1.0
        if r["kind"] == "lung":
            assert 0.0 <= r["accuracy"] <= 1.0 and r["n"] > 0
            assert r["cancer_called_benign_unabstained"] is None or 0 <= r["cancer_called_benign_unabstained"] <= 1
    saved = json.loads((tmp_path / "out" / "stress.json").read_text())["fields"]
    assert saved == json.loads(json.dumps(rows))
    table, whole = (tmp_path / "out" / "stress.md").read_text().split("Whole images through the Space's rule")
    assert table.count("\n") == len(rows) + 3 and "| lung-tcga |" in table
    verdicts = json.loads((tmp_path / "out" / "stress.json").read_text())["whole_images"]
    assert {r["set"] for r in verdicts} >= {"lung-tcga", "nonlung-colon"} and "| lung-tcga | plain |" in whole


def test_shifts_keep_shape_and_dtype():
    rng = np.random.default_rng(0)
    tile = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    pool = rng.integers(0, 256, (5, 224, 224, 3), dtype=np.uint8)
    for policy in lab_shift.POLICIES:
        out = lab_shift.augment(tile, policy=policy, rng=rng, pool=pool)
        assert out.shape == tile.shape and out.dtype == np.uint8
    large, small = (rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for side in (1000, 150))
    assert image_sets.fields(large, factor=0.7).shape == (9, 224, 224, 3)
    assert image_sets.fields(small, factor=1.0).shape == (1, 224, 224, 3)
    palette = lab_shift.lab_stats([tile])
    np.testing.assert_allclose(lab_shift.lab_stats([lab_shift.reinhard(pool[0], *palette)])[0], palette[0], atol=2.0)
    with pytest.raises(ValueError, match="pool"):
        lab_shift.augment(tile, policy="scale", rng=rng)
