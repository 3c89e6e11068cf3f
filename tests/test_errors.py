"""One error base class: every error raised on purpose is a ModelError, and one line for a person."""
from __future__ import annotations

import pytest

from imageclf.core import fields as tiling, imaging, scale
from imageclf.hub import source as model_source
from imageclf.model import config as model_config, explain, feature_check as feature_ood, predictor, safety as model_safety
from imageclf.errors import ModelError, first_line
from imageclf.core.imaging import IMAGE_SUFFIXES, decode_image
from imageclf.settings import Settings, SettingsError
from scripts import predict_client
from scripts.predict_client import SpaceUnreachableError
from scripts.release.pick_examples import ExamplesError
from scripts.release.push_model import HubPushError
from training.data import samples
from training.data.samples import DatasetError
from training.evaluation.stress import StressError
from training.models.backbone_weights import BackboneWeightsError
from training.runtime.devices import StrategyError
from training.runtime.tracking import TrackingUnavailable

NAMED = [model_config.ConfigError, imaging.ImageError, explain.GradCamError, predictor.ModelFolderError,
         scale.ScaleError, feature_ood.FeatureOODError, model_source.ModelSourceError, tiling.TilingError,
         model_safety.UnsafeModelError]


@pytest.mark.parametrize("error", NAMED, ids=lambda e: e.__name__)
def test_every_named_error_is_a_model_error(error):
    assert issubclass(error, ModelError)


def test_callers_catch_one_base_and_read_one_line():
    with pytest.raises(ModelError) as caught:
        decode_image(b"definitely not an image")
    assert "\n" not in first_line(caught.value) and first_line(ValueError("a\nb")) == "a"


def test_one_list_of_image_suffixes_including_gif():
    assert ".gif" in IMAGE_SUFFIXES
    assert predict_client.IMAGE_SUFFIXES == samples.IMAGE_SUFFIXES == IMAGE_SUFFIXES


def test_scripts_and_training_errors_share_the_base():
    for error in (ExamplesError, SpaceUnreachableError, HubPushError, BackboneWeightsError, DatasetError,
                  StrategyError, StressError, TrackingUnavailable):
        assert issubclass(error, ModelError), error


def test_settings_come_from_the_environment_in_one_place():
    assert Settings.from_env({}) == Settings()
    assert Settings.from_env({"MAX_FIELDS": "16", "MAX_IMAGE_PIXELS": "1000"}).max_fields == 16
    with pytest.raises(SettingsError, match="MAX_FIELDS='many' is not a whole number"):
        Settings.from_env({"MAX_FIELDS": "many"})
