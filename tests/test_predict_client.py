"""``scripts/predict_client.py`` against a real Space subprocess on a tiny model."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from predictor import Predictor
from scripts.predict_client import (
    SpaceUnreachableError,
    classify_files,
    connect,
    list_images,
    main,
    write_csv,
)
from tests.tiny_model import DEFAULT_LABELS, free_port, run_space, write_test_image, write_tiny_model_folder

NAMES = sorted(name for _, name in DEFAULT_LABELS)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return write_tiny_model_folder(tmp_path_factory.mktemp("client") / "hub_model")


@pytest.fixture(scope="module")
def space_url(tiny_folder):
    with run_space(tiny_folder) as url:
        yield url


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """Three good images (one in a subfolder), one broken JPEG, one non-image file."""
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for i, rel in enumerate(["a.png", "b.jpeg", "sub/c.png"]):
        write_test_image(folder / rel, seed=20 + i)
    (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
    (folder / "notes.txt").write_text("skipped: not an image extension")
    return folder


def test_list_images_is_recursive_sorted_and_by_extension(image_folder):
    assert [p.relative_to(image_folder).as_posix() for p in list_images(image_folder)] == [
        "a.png", "b.jpeg", "broken.jpg", "sub/c.png"]


def test_folder_to_csv_matches_the_predictor(space_url, tiny_folder, image_folder, tmp_path):
    out = tmp_path / "results.csv"
    assert main([space_url, str(image_folder), "--out", str(out), "--no-progress"]) == 1  # one bad file
    with out.open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == ["path", "label", "confidence", *NAMES, "error"]
        rows = {Path(r["path"]).name: r for r in reader}
    assert sorted(rows) == ["a.png", "b.jpeg", "broken.jpg", "c.png"]

    broken = rows.pop("broken.jpg")
    assert "not an image that can be read" in broken["error"]
    assert broken["label"] == "" and all(broken[name] == "" for name in NAMES)

    predictor = Predictor(tiny_folder)
    for row in rows.values():
        direct = predictor.predict(row["path"])
        assert row["error"] == ""
        assert row["label"] == direct["name"]
        assert float(row["confidence"]) == pytest.approx(direct["confidence"], abs=1e-6)
        for name in NAMES:
            assert float(row[name]) == pytest.approx(direct["confidences"][name], abs=1e-6)


def test_single_image_prints_the_result(space_url, image_folder, capsys):
    assert main([space_url, str(image_folder / "a.png")]) == 0
    out = capsys.readouterr().out
    first, *lines = out.strip().splitlines()
    assert first.startswith(f"{image_folder / 'a.png'}: ") and first.endswith("%)")
    assert sorted(line.split("  ")[1].strip() for line in lines) == NAMES


def test_single_bad_image_reports_on_stderr(space_url, image_folder, capsys):
    assert main([space_url, str(image_folder / "broken.jpg")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "broken.jpg: error: This file is not an image that can be read" in captured.err


def test_core_functions_keep_going_after_errors(space_url, image_folder):
    client = connect(space_url)
    paths = [image_folder / "a.png", image_folder / "missing.png", image_folder / "broken.jpg",
             image_folder / "sub" / "c.png"]
    rows = classify_files(client, paths, progress=False)
    assert [bool(r["error"]) for r in rows] == [False, True, True, False]
    assert "does not exist" in rows[1]["error"]
    buffer = io.StringIO()
    header = write_csv(rows, buffer)
    assert header == ["path", "label", "confidence", *NAMES, "error"]
    assert len(buffer.getvalue().strip().splitlines()) == 1 + len(paths)


def test_unreachable_space_is_one_clear_line(image_folder, capsys):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(SpaceUnreachableError, match=f"Could not reach the Space '{url}'"):
        connect(url)
    assert main([url, str(image_folder), "--out", "unused.csv"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: Could not reach the Space '{url}'") and "\n" not in err


def test_missing_input_path(capsys, tmp_path):
    assert main(["http://127.0.0.1:9", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["http://127.0.0.1:9", str(tmp_path / "empty")]) == 2
    assert "no image files" in capsys.readouterr().err
