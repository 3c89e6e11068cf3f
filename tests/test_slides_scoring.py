"""Scoring slides end to end on the tiny test model: field geometry, the six outputs, the scale's source,
reruns that skip complete slides, and a sentence for every bad input while the other slides are scored."""
from __future__ import annotations

import csv
import importlib.metadata
import io
import json
import os

import cv2
import numpy as np
import pytest

from imageclf.core.scale import ScaleRequest
from imageclf.hashing import file_sha256
from imageclf.model.predictor import Predictor
from imageclf.provenance import code_version
from imageclf.slides.cohort import RUN_LOG, RunOptions, plan_jobs, run_serial
from imageclf.slides.slide_model import SlideModel
from imageclf.slides.scoring import score_slide
from scripts import score_slides
from scripts.perf.synthetic_slides import lung_mosaic, lung_tiles, write_slide
from tests.conftest import HUB_MODEL, require_dataset
from tests.support.slides import TINY_MPP, flat_mosaic, tiny_slide_model_folder, write_huge_slide

LAYOUT = ["LL.", ".LL"]


@pytest.fixture(scope="module")
def tiles():
    return lung_tiles(require_dataset("external-he") / "lung-tcga")


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return tiny_slide_model_folder(tmp_path_factory.mktemp("tiny") / "hub_model", HUB_MODEL)


@pytest.fixture(scope="module")
def model(tiny_folder):
    return SlideModel.from_folder(tiny_folder)


@pytest.fixture(scope="module")
def lung_svs(tiles, tmp_path_factory):
    return write_slide(tmp_path_factory.mktemp("slides") / "lung.svs", lung_mosaic(tiles, LAYOUT), mpp=0.25)


def read_csv(path):
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_a_slide_gets_six_outputs_in_level0_coordinates(lung_svs, model, tiny_folder, tmp_path):
    options = RunOptions(model_folder=tiny_folder)
    [record] = run_serial(plan_jobs([lung_svs], tmp_path), options, model=model, progress=False)
    dest = tmp_path / "lung"
    assert record["status"] == "scored" and sorted(p.name for p in dest.iterdir()) == [
        "fields.csv", "fields.geojson", "heatmap.png", "regions.geojson", "summary.json",
        "tissue.png"]                                                                 # no temporary files left
    summary = json.loads((dest / "summary.json").read_text())
    side = 64 * TINY_MPP / 0.25                 # the tiny model's 64 px input at 0.368 um/px, in 0.25 um/px pixels
    assert summary["scale"]["source"] == "metadata" and summary["scale"]["um_per_px"] == 0.25
    assert summary["scale"]["level_read"] == 0
    assert summary["scale"]["field_level0_px"][0] == pytest.approx(side, abs=0.01)
    assert summary["tissue"]["area_mm2"] == pytest.approx(4 * 0.25 ** 2, rel=0.15)
    assert summary["slide"]["file"] == "lung.svs" and summary["slide"]["dimensions"] == [3000, 2000]
    assert summary["model"]["name"] == "tiny-test-model" and summary["model"]["revision"].startswith("local sha256:")
    assert set(summary["timings"]) >= {"tissue_s", "scale_s", "fields_s", "engine_s", "total_s"}
    rows = read_csv(dest / "fields.csv")
    assert len(rows) == summary["fields"]["classified"] > 0
    boxes = np.array([[int(r[k]) for k in ("x", "y", "width", "height")] for r in rows])
    assert (boxes[:, 2] == round(side)).all() and (boxes[:, 0] + boxes[:, 2] <= 3000 + 1).all()
    assert all(abs(sum(float(r[f"p_{c}"]) for c in ("alpha", "beta", "gamma")) - 1) < 1e-4 for r in rows)
    collection = json.loads((dest / "fields.geojson").read_text())
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == len(rows)
    names = {"Alpha tissue", "Beta tissue", "Gamma tissue", "Not recognised"}
    for feature, box in zip(collection["features"], boxes, strict=True):
        x, y, w, h = box.tolist()
        assert feature["geometry"] == {"type": "Polygon", "coordinates": [[[x, y], [x + w, y], [x + w, y + h],
                                                                          [x, y + h], [x, y]]]}
        props = feature["properties"]
        assert props["objectType"] == "detection" and props["classification"]["name"] in names
        assert len(props["classification"]["color"]) == 3 and "p(Alpha tissue)" in props["measurements"]
    heatmap = cv2.imread(str(dest / "heatmap.png"))
    tissue = cv2.imread(str(dest / "tissue.png"), cv2.IMREAD_GRAYSCALE)
    assert heatmap.shape[1] <= 2048 and heatmap.shape[0] > heatmap.shape[1] * 2 / 3   # map plus legend below
    assert set(np.unique(tissue)) <= {0, 255} and tissue.mean() > 0


def test_summary_and_run_log_carry_the_run_metadata(lung_svs, tiles, model, tiny_folder, tmp_path):
    """Code version, package versions, the model's revision and the sha256 of its weights, in every
    summary.json (slides and images) and every run.jsonl line: a result can be traced to what made it."""
    png = tmp_path / "tile.png"
    cv2.imwrite(str(png), cv2.cvtColor(tiles[0], cv2.COLOR_RGB2BGR))
    out = tmp_path / "out"
    jobs = plan_jobs([lung_svs, png], out)
    run_serial(jobs, RunOptions(model_folder=tiny_folder), model=model, progress=False)
    run_serial(jobs, RunOptions(model_folder=tiny_folder), model=model, progress=False)      # both skipped
    sha, version = file_sha256(tiny_folder / "model.keras"), code_version()
    lines = [json.loads(line) for line in (out / RUN_LOG).read_text().splitlines()]
    summaries = [json.loads((out / name / "summary.json").read_text()) for name in ("lung", "tile")]
    assert [line["status"] for line in lines] == ["scored", "scored", "skipped", "skipped"]
    for record in [*summaries, *lines]:
        assert record["model"]["sha256"] == sha and record["model"]["revision"] == model.revision == f"local sha256:{sha[:12]}"
        assert record["model"]["name"] == "tiny-test-model" and record["model"]["repo"] is None
        assert record["model"]["folder"] == str(tiny_folder.resolve())
        assert record["code_version"] == version != "" and record["packages"]["numpy"] == importlib.metadata.version("numpy")
    assert [s["kind"] for s in summaries] == ["slide", "image"]
    assert all("stain_normalisation" in s for s in summaries)                   # None: the tiny model has no stain block
    assert len(json.dumps(lines[0])) < 1500                                     # run.jsonl lines stay small


def test_a_rerun_skips_complete_slides_and_redoes_changed_ones(lung_svs, model, tiny_folder, tmp_path):
    source = tmp_path / "copy.svs"
    source.write_bytes(lung_svs.read_bytes())
    options = RunOptions(model_folder=tiny_folder)
    jobs = plan_jobs([source], tmp_path / "out")
    assert run_serial(jobs, options, model=model, progress=False)[0]["status"] == "scored"
    stamp = (tmp_path / "out" / "copy" / "fields.csv").stat().st_mtime_ns
    assert run_serial(jobs, options, model=model, progress=False)[0]["status"] == "skipped"
    assert (tmp_path / "out" / "copy" / "fields.csv").stat().st_mtime_ns == stamp
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))   # the file changed
    assert run_serial(jobs, options, model=model, progress=False)[0]["status"] == "scored"
    (tmp_path / "out" / "copy" / "heatmap.png").unlink()                                 # an output went missing
    assert run_serial(jobs, options, model=model, progress=False)[0]["status"] == "scored"
    log = [json.loads(line)["status"] for line in (tmp_path / "out" / RUN_LOG).read_text().splitlines()]
    assert log == ["scored", "skipped", "scored", "scored"]


def test_mpp_is_reported_with_its_source(tiles, model, tmp_path):
    unlabelled = write_slide(tmp_path / "nompp.svs", lung_mosaic(tiles, LAYOUT), mpp=None)
    estimated = score_slide(unlabelled, model)
    assert estimated.scale.source == "estimate" and 0.15 < estimated.scale.mpp < 0.4     # truly 0.25 um/px
    assert "nucleus size" in estimated.scale.detail and len(estimated.fields) > 0
    calls = []
    overridden = score_slide(unlabelled, model, scale=ScaleRequest("microns_per_pixel", 0.5), progress=lambda done, total: calls.append((done, total)))
    assert overridden.scale.source == "override" and overridden.scale.mpp == 0.5
    assert overridden.reading["field_level0_px"][0] == pytest.approx(64 * TINY_MPP / 0.5, abs=0.01)
    assert calls[0] == (0, len(overridden.fields)) and calls[-1] == (len(overridden.fields),) * 2


def test_every_bad_input_gets_its_sentence_and_the_others_are_scored(lung_svs, tiles, model, tiny_folder, tmp_path):
    text = tmp_path / "notes.svs"
    text.write_text("not a slide\n")
    truncated = tmp_path / "truncated.svs"
    truncated.write_bytes(lung_svs.read_bytes()[:4000])
    corrupt_bytes = bytearray(lung_svs.read_bytes())
    corrupt_bytes[len(corrupt_bytes) // 3:len(corrupt_bytes) // 3 + 200_000] = bytes(200_000)
    corrupt = tmp_path / "corrupt.svs"
    corrupt.write_bytes(bytes(corrupt_bytes))
    inputs = [text, truncated, corrupt, write_huge_slide(tmp_path / "huge.svs", 300_000, 300_000),
              write_slide(tmp_path / "glass.svs", flat_mosaic((242, 241, 239)), mpp=0.25),
              write_slide(tmp_path / "pink.svs", flat_mosaic((230, 150, 190)), mpp=None),
              write_slide(tmp_path / "speck.svs", flat_mosaic((200, 120, 170), rows=1, cols=1, block=60), mpp=0.25,
                          downsamples=(1,)),
              tmp_path / "missing.svs", lung_svs]
    out = tmp_path / "out"
    records = {r["out"]: r for r in run_serial(plan_jobs(inputs, out), RunOptions(model_folder=tiny_folder),
                                                model=model, progress=False)}
    assert records["lung"]["status"] == "scored"
    expected = {"notes": "not a whole-slide image", "truncated": "TIFF file OpenSlide cannot read",
                "corrupt": "damaged", "huge": "300,000 x 300,000", "missing": "not found",
                "speck": "smaller than one field"}
    for name, words in expected.items():
        assert records[name]["status"] == "failed" and words in records[name]["error"], records[name]
        assert json.loads((out / name / "error.json").read_text())["error"] == records[name]["error"]
        assert not (out / name / "summary.json").exists()
    for name, code in (("glass", "no_tissue"), ("pink", "scale_unknown")):     # refused slides are answers too
        summary = json.loads((out / name / "summary.json").read_text())
        assert records[name]["status"] == "scored" and summary["verdict"]["abstain_code"] == code
        assert summary["verdict"]["abstain_reason"].endswith(".") and summary["fields"]["classified"] == 0
    assert json.loads((out / "pink" / "summary.json").read_text())["scale"]["source"] == "unknown"


def test_the_cli_refuses_an_absurd_mpp_before_loading_anything(lung_svs, tmp_path, capsys):
    assert score_slides.main([str(lung_svs), "--out", str(tmp_path / "o"), "--mpp", "900", "--workers", "0"]) == 2
    error = capsys.readouterr().err
    assert "--mpp 900 means 900 um/px, outside the plausible range" in error and not (tmp_path / "o").exists()


def test_a_plain_image_takes_the_ordinary_image_path(tiles, model, tiny_folder, tmp_path):
    png = tmp_path / "tile.png"
    cv2.imwrite(str(png), cv2.cvtColor(tiles[0], cv2.COLOR_RGB2BGR))
    [record] = run_serial(plan_jobs([png], tmp_path / "out"), RunOptions(model_folder=tiny_folder), model=model,
                          progress=False)
    assert record["status"] == "scored" and record["kind"] == "image"
    analysis = json.loads((tmp_path / "out" / "tile" / "analysis.json").read_text())
    expected = Predictor(tiny_folder).analyze(str(png), scale="auto").to_json()
    assert analysis["label"] == expected["label"] and analysis["probabilities"] == pytest.approx(
        expected["probabilities"]) and analysis["scale"] == expected["scale"]


def test_real_slides_report_where_their_scale_comes_from(model):
    wsi = require_dataset("wsi")
    cmu = score_slide(wsi / "CMU-1-Small-Region.svs", model)
    assert cmu.scale.source == "metadata" and cmu.scale.mpp == pytest.approx(0.499)
    assert cmu.scale.estimate is not None                                  # measured too, as a check
    tcga = score_slide(wsi / "TCGA-CR-7395-01A-01-TS1.svs", model)          # no mpp in its metadata
    assert tcga.scale.source == "estimate" and 0.3 < tcga.scale.mpp < 1.5 and len(tcga.fields) > 100
    assert tcga.tissue.area_mm2 > 1.0
