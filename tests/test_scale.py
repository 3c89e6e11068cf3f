"""The nucleus-size scale estimate (src/imageclf/core/scale.py) and its reference (training/calibration/scale_reference.py)."""
from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from imageclf.model.config import read_config
from imageclf.core.refusal import Reason, judge_scale
from imageclf.core.request import ScaleError, parse_scale
from imageclf.core.scale import ScaleRequest, ScaleSpec
from imageclf.core.scale import decide_scale, estimate_relative_size
from tests.conftest import HUB_MODEL, ROOT
from training.calibration.scale_reference import build_scale_spec, split_tiles, zoom_out_check

MANIFEST = ROOT / "training" / "splits" / "lc25000-lung-grouped.csv"


@pytest.mark.parametrize("text, mode, mpp", [
    (None, "auto", None), ("auto", "auto", None), (" Native ", "native", None),
    ("0.5", "microns_per_pixel", 0.5), ("0.25 um/px", "microns_per_pixel", 0.25),
    ("20x", "microns_per_pixel", 0.5), ("40X", "microns_per_pixel", 0.25)])
def test_parse_scale(text, mode, mpp):
    spec = ScaleSpec(field_of_view_px=224, microns_per_pixel=0.5, microns_per_pixel_note=None, reference=None)
    request = parse_scale(text, spec)
    assert request.mode == mode and request.microns_per_pixel == mpp


@pytest.mark.parametrize("text", ["big", "-1", "0", "20y"])
def test_bad_scale_text_is_refused(text):
    with pytest.raises(ScaleError, match="Scale"):
        parse_scale(text)


def _nuclei(radius: float, *, side: int = 224, seed: int = 0) -> np.ndarray:
    """Pink background with purple haematoxylin-like disks of one radius (a synthetic H&E field)."""
    rng = np.random.default_rng(seed)
    image = np.full((side, side, 3), (236, 170, 200), np.uint8)
    for _ in range(int(side * side / (radius * radius * 12))):
        centre = tuple(int(v) for v in rng.integers(0, side, 2))
        cv2.circle(image, centre, max(1, round(radius)), (90, 40, 140), -1, lineType=cv2.LINE_AA)
    return cv2.GaussianBlur(image, (3, 3), 0.6)


@pytest.fixture(scope="module")
def synthetic_spec(tmp_path_factory):
    """A reference measured on synthetic 224 px tiles with 6 px nuclei, as training would."""
    root = tmp_path_factory.mktemp("synthetic")
    tiles = {"a": []}
    for i in range(40):
        path = root / f"t{i}.png"
        cv2.imwrite(str(path), _nuclei(6.0, seed=i)[..., ::-1])
        tiles["a"].append(path)
    return build_scale_spec(tiles, field_of_view_px=224, mosaics=12, note="synthetic")


@pytest.mark.parametrize("radius, expected", [(6.0, 1.0), (12.0, 2.0), (18.0, 3.0), (3.0, 0.5)])
def test_estimate_follows_nucleus_size(synthetic_spec, radius, expected):
    image = _nuclei(radius, side=448, seed=99)
    relative, residual = estimate_relative_size(image, synthetic_spec.reference)
    assert relative == pytest.approx(expected, rel=0.25) and np.isfinite(residual)


def test_no_stain_no_estimate(synthetic_spec):
    blank = np.full((300, 300, 3), 255, np.uint8)
    decision = decide_scale(blank, synthetic_spec, parse_scale("auto"))
    refusal = judge_scale(decision, synthetic_spec)
    assert not decision.measured and refusal.reason is Reason.SCALE_UNKNOWN
    assert "could not be estimated" in refusal.phrase and decision.to_dict(refused=refusal.phrase)["ok"] is False


def test_out_of_range_scale_is_refused_with_a_reason(synthetic_spec):
    decision = decide_scale(_nuclei(6.0), synthetic_spec, parse_scale("native", synthetic_spec))
    assert judge_scale(decision, synthetic_spec) is None and decision.factor == 1.0
    with pytest.raises(ScaleError, match="does not declare microns per pixel"):   # refused at the edge
        parse_scale("0.5", synthetic_spec)
    declared = replace(synthetic_spec, microns_per_pixel=0.5)
    assert decide_scale(_nuclei(6.0), declared, parse_scale("0.25", declared)).relative_size == pytest.approx(2.0)
    with pytest.raises(ScaleError, match="plausible range"):            # a typo, refused at the edge
        parse_scale("0.01", declared)
    far = decide_scale(_nuclei(6.0), declared, ScaleRequest("microns_per_pixel", 0.01))   # 50x larger nuclei
    refusal = judge_scale(far, declared)
    assert refusal.reason is Reason.MAGNIFICATION_TOO_HIGH and "far above" in refusal.phrase
    assert refusal.sentence.startswith("The magnification is far above")


@pytest.mark.slow
def test_zoom_outs_of_test_tiles_recover_their_factor(lung_data):
    """Mosaics of same-class TEST tiles shrunk 2x, 3x, 4x: >= 90% within +-25% (the reference is
    measured on TRAIN tiles only, so nothing leaks)."""
    spec = read_config(HUB_MODEL).scale
    report = zoom_out_check(spec, split_tiles(lung_data, MANIFEST, split="test"), per_zoom=60)
    within = np.mean([entry["within"] for entry in report.values()])
    assert within >= 0.9, report


@pytest.mark.slow
def test_full_size_originals_are_found_larger(lung_data):
    """The 768 px LC25000 originals show nuclei 3.43x larger than the 224 px tiles."""
    originals = sorted((lung_data.parent / "external-he" / "lc25000-lung-768").glob("*/*.jp*g"))
    if len(originals) != 30:
        pytest.fail(f"expected the 30 full-size originals, found {len(originals)}")
    spec = read_config(HUB_MODEL).scale
    sizes = [estimate_relative_size(cv2.imread(str(p))[..., ::-1].copy(), spec.reference)[0] for p in originals]
    assert 2.4 < float(np.median(sizes)) < 4.8 and min(sizes) > 1.5

