"""Hostile and odd uploads (``tests/support/hostile_corpus.py``) through ``imaging`` and the ``Predictor``.

Each case ends either in an answer (with the expected pixels) or in an ``ImageError`` whose
message is one sentence for a person: no traceback, no library internals.
"""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import ImageFile

from imageclf.core.imaging import ImageError, decode_image
from imageclf.model.predictor import Predictor
from tests.support import hostile_corpus
from tests.support.hostile_corpus import CASES, LIMITS, Case, with_limits
from tests.support.tiny_model import write_tiny_model_folder
from tests.support.field_rows import one_field

INTERNALS = re.compile(r"Traceback|cv2|PIL|Pillow|BytesIO|0x[0-9a-f]{6,}|Errno|\.py\b", re.I)


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> Predictor:
    return Predictor(write_tiny_model_folder(tmp_path_factory.mktemp("tiny") / "hub_model"))


@pytest.fixture(autouse=True)
def corpus_limits(monkeypatch):
    """The limits the size cases were built against (the Space gets them as env variables)."""
    with_limits(monkeypatch, LIMITS)


def assert_message_for_people(message: str) -> None:
    assert message and "\n" not in message and message.endswith("."), message
    assert not INTERNALS.search(message), message


@pytest.mark.parametrize("make", CASES, ids=[make.__name__ for make in CASES])
def test_case_through_the_predictor(make, predictor, tmp_path):
    case: Case = make()
    path = tmp_path / case.filename
    path.write_bytes(case.data)
    for source in (case.data, path):  # encoded bytes and a file path take the same checks
        if case.error:
            with pytest.raises(ImageError) as info:
                one_field(predictor, source)
            assert case.error in str(info.value)
            assert_message_for_people(str(info.value))
        else:
            result = one_field(predictor, source)
            assert result["label"] in predictor.class_ids
            assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    if case.check:
        case.check(decode_image(path))


@pytest.mark.parametrize("make", [hostile_corpus.decompression_bomb_png, hostile_corpus.over_pixel_limit_png])
def test_pixel_limit_is_enforced_from_the_header_before_decoding(make, monkeypatch):
    decoded: list[str] = []
    original = ImageFile.ImageFile.load

    def spy(image):
        decoded.append(image.format)
        return original(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    with pytest.raises(ImageError, match="too large"):
        decode_image(make().data)
    assert decoded == []  # no pixel data was decoded
    decode_image(hostile_corpus.grayscale_png().data)
    assert decoded and set(decoded) == {"PNG"}  # the spy does see a real decode


def test_bomb_header_with_default_limits_is_refused_quickly(monkeypatch):
    with_limits(monkeypatch, {"MAX_IMAGE_PIXELS": 64_000_000})
    with pytest.raises(ImageError, match=r"declares 2,500,000,000 pixels; the limit is 64,000,000"):
        decode_image(hostile_corpus.decompression_bomb_png().data)


def test_exif_orientation_is_honoured():
    case = hostile_corpus.exif_rotated_jpeg()
    rgb = decode_image(case.data)
    assert rgb.shape == (64, 32, 3)  # stored 64 wide x 32 tall, shown rotated
    case.check(rgb)


def test_file_size_is_checked_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    path.write_bytes(hostile_corpus.over_byte_limit_png().data)
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("the file was read"))
    with pytest.raises(ImageError, match=r"The file is too large \(3\.5 MB\); the limit is 3 MB\."):
        decode_image(path)


def test_lung_tiles_decode_exactly_as_before(lung_data):
    """Training pixels must not change: Pillow gives OpenCV's pixels for the dataset's JPEGs."""
    tiles = sorted(lung_data.glob("*/*.jpeg"))[::500]
    assert len(tiles) >= 20
    for tile in tiles:
        expected = cv2.cvtColor(cv2.imread(str(tile), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(decode_image(tile), expected, err_msg=str(tile))
