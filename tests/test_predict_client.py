"""``scripts/predict_client.py`` against a real Space subprocess on a tiny model."""
from __future__ import annotations

import csv
import io
from concurrent.futures import CancelledError
from pathlib import Path

import pytest

from imageclf.core.imaging import ImageError, decode_image
from imageclf.model.predictor import Predictor
from scripts.perf.local_space import free_port
from scripts.predict_client import SpaceUnreachableError, classify_files, connect, list_images, main, write_csv
from tests.support.tiny_model import DEFAULT_LABELS, write_test_image
from tests.support.field_rows import one_field

NAMES = sorted(name for _, name in DEFAULT_LABELS)
EXTRA = ["abstained", "reason", "reason_code", "scale_factor"]


def _decode_error(path: Path) -> str:
    """The message the Space's decoder gives for a file (the client must pass it on unchanged)."""
    with pytest.raises(ImageError) as info:
        decode_image(path)
    return str(info.value)


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


def test_folder_to_csv_matches_the_predictor(tiny_space, tiny_folder, image_folder, tmp_path):
    out = tmp_path / "results.csv"
    assert main([tiny_space, str(image_folder), "--out", str(out), "--no-progress"]) == 1  # one bad file
    with out.open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == ["path", "label", "name", "confidence", *EXTRA, *NAMES, "error"]
        rows = {Path(r["path"]).name: r for r in reader}
    assert sorted(rows) == ["a.png", "b.jpeg", "broken.jpg", "c.png"]

    broken = rows.pop("broken.jpg")
    assert broken["error"] == _decode_error(image_folder / "broken.jpg")
    assert broken["label"] == broken["name"] == "" and all(broken[name] == "" for name in NAMES)

    predictor = Predictor(tiny_folder)
    for row in rows.values():
        direct = one_field(predictor, row["path"])
        assert row["error"] == "" and row["abstained"] == "false" and row["reason"] == ""
        assert row["label"] == direct["label"] and row["name"] == direct["name"]
        assert float(row["confidence"]) == pytest.approx(direct["confidence"], abs=1e-6)
        for name in NAMES:
            assert float(row[name]) == pytest.approx(direct["confidences"][name], abs=1e-6)


def test_single_image_prints_the_result(tiny_space, image_folder, capsys):
    assert main([tiny_space, str(image_folder / "a.png")]) == 0
    out = capsys.readouterr().out
    first, *lines = out.strip().splitlines()
    assert first.startswith(f"{image_folder / 'a.png'}: ") and first.endswith("%)")
    assert sorted(line.split("  ")[1].strip() for line in lines) == NAMES


def test_single_bad_image_reports_on_stderr(tiny_space, image_folder, capsys):
    assert main([tiny_space, str(image_folder / "broken.jpg")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"broken.jpg: error: {_decode_error(image_folder / 'broken.jpg')}" in captured.err


def test_core_functions_keep_going_after_errors(tiny_space, image_folder):
    client = connect(tiny_space)
    paths = [image_folder / "a.png", image_folder / "missing.png", image_folder / "broken.jpg",
             image_folder / "sub" / "c.png"]
    rows = classify_files(client, paths, progress=False)
    assert [bool(r["error"]) for r in rows] == [False, True, True, False]
    assert "does not exist" in rows[1]["error"]
    buffer = io.StringIO()
    header = write_csv(rows, buffer)
    assert header == ["path", "label", "name", "confidence", *EXTRA, *NAMES, "error"]
    assert len(buffer.getvalue().strip().splitlines()) == 1 + len(paths)


def test_abstentions_name_no_class_in_csv_or_print(abstaining_space, tmp_path, capsys):
    """A Space whose model abstains: the CSV row and the printed line give the reason, no class or number."""
    image = write_test_image(tmp_path / "x.png", seed=3)
    out = tmp_path / "abstained.csv"
    assert main([abstaining_space, str(tmp_path / "x.png"), "--out", str(out), "--no-progress"]) == 0
    assert main([abstaining_space, str(image)]) == 0
    printed = capsys.readouterr().out
    with out.open(newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["abstained"] == "true" and row["reason"] and row["reason_code"] in {"confidence", "colour"}
    assert row["label"] == row["name"] == row["confidence"] == "" and all(row.get(name, "") == "" for name in NAMES)
    assert "not recognised" in printed and not any(name in printed for name in NAMES)


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


def test_chunks_keep_order_and_isolate_errors(tiny_space, tiny_folder, tmp_path):
    """Several /predict_batch calls in flight: rows stay in input order, bad files stay in their row."""
    files = [write_test_image(tmp_path / f"t{i}.png", seed=50 + i) for i in range(6)]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    paths = files[:2] + [broken, tmp_path / "gone.png"] + files[2:]
    rows = classify_files(connect(tiny_space), paths, progress=False, chunk_size=2, in_flight=2)
    assert [row["path"] for row in rows] == [str(p) for p in paths]
    assert rows[2]["error"] == _decode_error(broken) and rows[3]["error"].endswith("gone.png does not exist")
    predictor = Predictor(tiny_folder)
    for row in rows[:2] + rows[4:]:
        direct = one_field(predictor, row["path"])
        assert row["error"] == "" and row["name"] == direct["name"] and row["label"] == direct["label"]
        assert row["probabilities"] == pytest.approx(direct["confidences"], abs=1e-6)  # all classes


class _PredictOnly:
    """A client for a Space that has /predict but not /predict_batch (an older deployment)."""

    def __init__(self, client) -> None:
        self._client = client
        self.batch_calls = 0

    def view_api(self, **kwargs):
        info = self._client.view_api(**kwargs)
        info["named_endpoints"] = {"/predict": info["named_endpoints"]["/predict"]}
        return info

    def predict(self, *args, api_name, **kwargs):
        self.batch_calls += api_name == "/predict_batch"
        return self._client.predict(*args, api_name=api_name, **kwargs)


def test_falls_back_to_predict_per_file(tiny_space, tiny_folder, image_folder):
    client = _PredictOnly(connect(tiny_space))
    rows = classify_files(client, list_images(image_folder), progress=False)
    assert client.batch_calls == 0
    assert [bool(row["error"]) for row in rows] == [False, False, True, False]
    direct = one_field(Predictor(tiny_folder), rows[0]["path"])
    assert rows[0]["name"] == direct["name"] and rows[0]["label"] == direct["label"] and rows[0]["confidence"] == pytest.approx(direct["confidence"])


def test_a_dropped_job_is_sent_once_more():
    """gradio_client can cancel a job submitted as its shared event stream closes: resend that chunk
    once; a chunk that fails otherwise fills its rows' errors and is not retried."""

    class Job:
        def __init__(self, outcome):
            self.outcome = outcome

        def result(self):
            if isinstance(self.outcome, BaseException):
                raise self.outcome
            return self.outcome

    answer = {"label": "alpha", "name": "Alpha tissue", "confidence": 0.9, "confidences": {"Alpha tissue": 0.9},
              "abstained": False, "abstain_reason": None, "scale": {"factor": 1.0}, "error": None}

    class Client:
        """A Space with /predict_batch whose jobs fail in a given order."""

        def __init__(self, outcomes):
            self.outcomes, self.submitted = list(outcomes), []

        def view_api(self, **kwargs):
            return {"named_endpoints": {"/predict": {}, "/predict_batch": {}}}

        def submit(self, files, scale, api_name):
            self.submitted.append((len(files), scale, api_name))
            return Job(self.outcomes.pop(0))

    client = Client([CancelledError(), [answer]])
    (row,) = classify_files(client, [__file__], progress=False)
    assert client.submitted == [(1, "auto", "/predict_batch")] * 2 and row["name"] == "Alpha tissue"
    assert not row["error"]
    client = Client([RuntimeError("connection reset")])
    (failed,) = classify_files(client, [__file__], progress=False)
    assert failed["error"] == "RuntimeError: connection reset" and len(client.submitted) == 1  # no retry
