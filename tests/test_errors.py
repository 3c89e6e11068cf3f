"""One error base class: every error raised on purpose is a ModelError, and one line for a person."""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import imageclf
from imageclf.core.imaging import IMAGE_SUFFIXES, decode_image
from imageclf.errors import ModelError, first_line
from imageclf.settings import Settings, SettingsError
from scripts import predict_client
from scripts.predict_client import SpaceUnreachableError
from scripts.release.pick_examples import ExamplesError
from scripts.release.push_model import HubPushError
from training.data import samples
from training.data.samples import DatasetError
from training.models.backbone_weights import BackboneWeightsError
from training.runtime.devices import StrategyError
from training.runtime.tracking import TrackingUnavailable

def _package_errors() -> list[type[BaseException]]:
    """Every exception class defined in a module of the shared package (found, not listed by hand)."""
    found = []
    for info in pkgutil.walk_packages(imageclf.__path__, "imageclf."):
        module = importlib.import_module(info.name)
        found += [obj for _, obj in inspect.getmembers(module, inspect.isclass)
                  if issubclass(obj, BaseException) and obj.__module__ == module.__name__
                  and not obj.__name__.startswith("_")]   # private signals never leave their module
    return found


NAMED = _package_errors()


def test_the_package_names_its_errors():
    names = {error.__name__ for error in NAMED}
    assert {"ConfigError", "ImageError", "GradCamError", "ModelFolderError", "ScaleError", "FeatureOODError",
            "ModelSourceError", "TilingError", "UnsafeModelError", "SettingsError"} <= names, names


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
                  StrategyError, TrackingUnavailable):
        assert issubclass(error, ModelError), error


def test_settings_come_from_the_environment_in_one_place():
    assert Settings.from_env({}) == Settings()
    assert Settings.from_env({"MODEL_REPO": "a/b", "EXAMPLES_DIR": "ex"}).examples_dir == Path("ex")
    assert Settings.from_env({"MAX_FIELDS": "16", "MAX_IMAGE_PIXELS": "1000"}).max_fields == 16
    with pytest.raises(SettingsError, match="MAX_FIELDS='many' is not a whole number"):
        Settings.from_env({"MAX_FIELDS": "many"})
