"""``src/imageclf/model/explain.py``: Grad-CAM target discovery, logits, heatmaps and the overlay."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from imageclf.model.explain import overlay
from imageclf.model.gradcam import GradCam, GradCamError, build_cam_model, find_target_path
from imageclf.model.predictor import Predictor
from tests.conftest import HUB_MODEL
from tests.support.tiny_model import write_tiny_model_folder
from tests.support.field_rows import one_field

SIDE = 32
RED, BLUE = (255, 0, 0), (0, 0, 255)


def _detector_layer(name: str = "detect") -> keras.layers.Conv2D:
    """1x1 conv with hand-set weights: channel 0 fires on pure red, channel 1 on pure blue."""
    conv = keras.layers.Conv2D(2, 1, activation="relu", name=name)
    conv.build((None, SIDE, SIDE, 3))
    kernel = np.array([[1.0, -1.0], [-1.0, -1.0], [-1.0, 1.0]], np.float32)  # rows: R, G, B
    conv.set_weights([kernel.reshape(1, 1, 3, 2), np.zeros(2, np.float32)])
    return conv


def _head(x, *, softmax_layer: bool = True):
    """GAP -> logits (class 0 reads the red channel, class 1 the blue one) -> softmax."""
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    dense = keras.layers.Dense(2, name="logits", activation=None if softmax_layer else "softmax")
    out = dense(x)
    dense.set_weights([np.eye(2, dtype=np.float32) * 10.0, np.zeros(2, np.float32)])
    return keras.layers.Softmax(name="probabilities")(out) if softmax_layer else out


def colour_model(*, nested: str | None = None, frozen: bool = False) -> keras.Model:
    """uint8 image -> Rescaling -> red/blue detector (flat, or inside a nested model) -> head.

    ``nested="spatial"``: the backbone returns the detector's map; ``nested="pooled"``: the
    backbone pools itself, so the outer model has no 4-D layer and Grad-CAM must look inside.
    """
    inputs = keras.Input((SIDE, SIDE, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1.0 / 255, name="to_float")(inputs)
    if nested is None:
        return keras.Model(inputs, _head(_detector_layer()(x)), name="flat")
    inner_in = keras.Input((SIDE, SIDE, 3))
    inner = _detector_layer()(inner_in)
    if nested == "pooled":
        inner = keras.layers.GlobalAveragePooling2D(name="inner_pool")(inner)
    backbone = keras.Model(inner_in, inner, name="backbone")
    backbone.trainable = not frozen
    x = backbone(x)
    if nested == "pooled":
        dense = keras.layers.Dense(2, name="logits")
        logits = dense(x)
        dense.set_weights([np.eye(2, dtype=np.float32) * 10.0, np.zeros(2, np.float32)])
        return keras.Model(inputs, keras.layers.Softmax()(logits), name="pooled")
    return keras.Model(inputs, _head(x), name="nested")


def two_squares(*, red_at: tuple[int, int], blue_at: tuple[int, int], size: int = 8) -> np.ndarray:
    """Grey image with a red and a blue square (top-left corners given): a known answer per class."""
    img = np.full((SIDE, SIDE, 3), 128, np.uint8)
    for (y, x), colour in ((red_at, RED), (blue_at, BLUE)):
        img[y:y + size, x:x + size] = colour
    return img


def _square_mask(at: tuple[int, int], size: int = 8) -> np.ndarray:
    mask = np.zeros((SIDE, SIDE), bool)
    mask[at[0]:at[0] + size, at[1]:at[1] + size] = True
    return mask


@pytest.mark.parametrize("layout", [((2, 20), (20, 4)), ((22, 2), (3, 12))])
@pytest.mark.parametrize("variant", [dict(), dict(nested="spatial"), dict(nested="spatial", frozen=True),
                                     dict(nested="pooled")])
def test_cam_highlights_the_evidence_for_each_class(layout, variant):
    """Class 0 must light up the red square only, class 1 the blue square only, wherever they are."""
    red_at, blue_at = layout
    model = colour_model(**variant)
    cam = GradCam(model)
    image = two_squares(red_at=red_at, blue_at=blue_at)
    for class_index, at, other in ((0, red_at, blue_at), (1, blue_at, red_at)):
        heat = cam.heatmap(image, class_index=class_index).heatmap
        assert heat.shape == (SIDE, SIDE)
        assert heat[_square_mask(at)].min() > 0.99
        assert heat[~_square_mask(at)].max() < 0.01  # the other square included
        assert heat[_square_mask(other)].max() < 0.01


def test_default_class_is_the_top_class():
    model = colour_model()
    image = two_squares(red_at=(0, 0), blue_at=(16, 16))
    image[16:24, 16:24] = 128  # remove the blue square: red wins
    result = GradCam(model).heatmap(image)
    assert result.class_index == int(np.argmax(model.predict_on_batch(image[None])[0])) == 0


@pytest.mark.parametrize("variant, path", [(dict(), ("detect",)), (dict(nested="spatial"), ("backbone", "detect")),
                                           (dict(nested="pooled"), ("backbone", "detect"))])
def test_target_layer_is_found_not_named(variant, path):
    assert find_target_path(colour_model(**variant)) == path


def test_cam_model_scores_are_the_logits():
    """Softmax of the Grad-CAM scores equals the model output (the scores are pre-softmax)."""
    for model in (colour_model(), colour_model(nested="spatial"), colour_model(nested="pooled")):
        image = two_squares(red_at=(1, 1), blue_at=(12, 12))[None]
        _, scores = build_cam_model(model)(image)
        expected = model.predict_on_batch(image)
        assert keras.ops.convert_to_numpy(keras.ops.softmax(scores)) == pytest.approx(expected, abs=1e-6)
        assert not np.allclose(keras.ops.convert_to_numpy(scores), expected)  # not the probabilities


def test_tiny_model_dense_softmax(tmp_path):
    """tests/support/tiny_model.py: Dense(activation="softmax") head; the logits are recovered from its weights."""
    predictor = Predictor(write_tiny_model_folder(tmp_path / "m"))
    cam = GradCam(predictor.model)
    (conv,) = [layer for layer in predictor.model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert cam.target_path == (conv.name,)  # its only conv layer (Keras numbers the name per process)
    image = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    _, scores = build_cam_model(predictor.model)(image[None])
    assert keras.ops.convert_to_numpy(keras.ops.softmax(scores))[0] == pytest.approx(
        list(one_field(predictor, image)["probabilities"].values()), abs=1e-5)
    result = cam.heatmap(image)
    assert result.heatmap.shape == (31, 31) and result.heatmap.dtype == np.float32
    assert 0.0 <= result.heatmap.min() and result.heatmap.max() == pytest.approx(1.0)


def test_keras_applications_backbone_nested():
    """A keras.applications model used as a layer: the target is inside it."""
    backbone = keras.applications.MobileNetV3Small(input_shape=(64, 64, 3), include_top=False, weights=None,
                                                   include_preprocessing=True)
    inputs = keras.Input((64, 64, 3), dtype="uint8")
    x = backbone(keras.ops.cast(inputs, "float32"))
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    cam = GradCam(model)
    assert cam.target_path[0] == backbone.name and len(cam.target_path) == 2
    heat = cam.heatmap(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).heatmap
    assert heat.shape == (2, 2) and np.isfinite(heat).all() and 0.0 <= heat.min() <= heat.max() <= 1.0


@pytest.mark.slow
def test_bundled_model_target_and_heatmap():
    if not (HUB_MODEL / "model.keras").is_file():
        pytest.skip("hub_model/model.keras not present")
    predictor = Predictor(HUB_MODEL)
    cam = GradCam(predictor.model)
    # The last (batch, H, W, C) layer before the pooling layer, found from shapes, not names; inside
    # the backbone when the layer before the pooling is a nested model (DenseNet121).
    layers = predictor.model.layers
    pool = [i for i, layer in enumerate(layers) if isinstance(layer, keras.layers.GlobalAveragePooling2D)][-1]
    before = layers[pool - 1]
    nested = isinstance(before, keras.Model)
    assert cam.target_path == ((before.name, before.layers[-1].name) if nested else (before.name,))
    result = cam.heatmap(np.full((*predictor.input_size, 3), 200, np.uint8))
    assert result.heatmap.ndim == 2 and result.heatmap.shape[0] > 1
    assert 0.0 <= result.heatmap.min() and result.heatmap.max() <= 1.0


def test_model_without_spatial_layer_is_a_named_error():
    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    with pytest.raises(GradCamError, match="no layer with a"):
        GradCam(model)


def test_overlay_opacity():
    rgb = np.random.default_rng(1).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    heat = np.zeros((4, 4), np.float32)
    heat[0, 0] = 1.0
    assert np.array_equal(overlay(rgb, heat, opacity=0.0), rgb)  # image only
    full = overlay(rgb, heat, opacity=1.0)
    assert full.shape == rgb.shape and full.dtype == np.uint8
    assert full[0, 0, 0] > 100 and full[0, 0, 2] < 50     # hot corner: red in the jet map
    assert full[-1, -1, 2] > 100 and full[-1, -1, 0] < 50  # cold corner: blue
    half = overlay(rgb, heat, opacity=0.5).astype(int)
    assert np.abs(half - (rgb.astype(int) + full.astype(int)) / 2).max() <= 1
