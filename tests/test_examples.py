"""``space/examples.py``: example images from EXAMPLES_DIR, the model folder, or the pinned Hub repo."""
from __future__ import annotations

import logging
import time

from huggingface_hub import HfApi

from examples import find_examples, folder_examples, hub_examples, true_class
from imageclf.hub.source import ModelSource, local_model
from tests.support.tiny_model import imported_app, run_ui_event, write_test_image, write_tiny_model_folder


def _with_examples(folder, names=("b.png", "a.png")):
    (folder / "examples").mkdir()
    for i, name in enumerate(names):
        write_test_image(folder / "examples" / name, seed=i)
    (folder / "examples" / "notes.txt").write_text("not an image")
    return folder


def test_local_model_folder_examples(tmp_path):
    folder = _with_examples(write_tiny_model_folder(tmp_path / "m"))
    found = find_examples(local_model(folder))
    assert [p.name for p in found] == ["a.png", "b.png"]  # sorted, images only
    assert find_examples(local_model(write_tiny_model_folder(tmp_path / "bare"))) == []


def test_examples_dir_wins(tmp_path):
    folder = _with_examples(write_tiny_model_folder(tmp_path / "m"))
    extra = tmp_path / "extra"
    extra.mkdir()
    write_test_image(extra / "z.png")
    assert [p.name for p in find_examples(local_model(folder), folder=extra)] == ["z.png"]
    assert folder_examples(tmp_path / "missing") == []
    assert len(folder_examples(folder / "examples", limit=1)) == 1


def test_hub_examples_at_the_pinned_revision(local_hub, tmp_path):
    folder = _with_examples(write_tiny_model_folder(tmp_path / "m"))
    api = HfApi()
    api.create_repo("testuser/with-examples", exist_ok=True)
    sha = api.upload_folder(repo_id="testuser/with-examples", folder_path=folder).oid
    # A later commit adds another example: the pinned revision must not see it.
    write_test_image(folder / "examples" / "c.png", seed=9)
    api.upload_folder(repo_id="testuser/with-examples", folder_path=folder)
    source = ModelSource(folder=tmp_path, repo_id="testuser/with-examples", revision=sha, commit=sha)
    found = find_examples(source)
    assert [p.name for p in found] == ["a.png", "b.png"]
    assert found[0].read_bytes() == (folder / "examples" / "a.png").read_bytes()
    assert sha in str(found[0])  # from the snapshot of that commit


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "examples" and r.levelno == logging.WARNING]


def test_hub_error_is_one_warning_and_no_examples(local_hub, caplog):
    with caplog.at_level(logging.WARNING):
        assert hub_examples("testuser/does-not-exist", revision="0" * 40) == []
    assert len(_warnings(caplog)) == 1 and "testuser/does-not-exist" in _warnings(caplog)[0]
    local_hub.stop()  # Hub unreachable: same outcome, and fast (examples must not stall a start)
    caplog.clear()
    start = time.monotonic()
    with caplog.at_level(logging.WARNING):
        assert hub_examples("testuser/whatever", revision=None) == []
    assert time.monotonic() - start < 5 and len(_warnings(caplog)) == 1


def test_cached_snapshot_examples_need_no_hub(local_hub, tmp_path):
    """A restart on a pinned commit whose examples are in the Hub cache serves them with the Hub down."""
    folder = _with_examples(write_tiny_model_folder(tmp_path / "m"))
    api = HfApi()
    api.create_repo("testuser/cached", exist_ok=True)
    sha = api.upload_folder(repo_id="testuser/cached", folder_path=folder).oid
    first = hub_examples("testuser/cached", revision=sha)
    snapshot = first[0].parent.parent
    local_hub.stop()
    source = ModelSource(folder=snapshot, repo_id="testuser/cached", revision=sha, commit=sha)
    assert find_examples(source) == first


def test_true_class_from_the_example_file_name():
    ids = ["lung_aca", "lung_n", "lung_n_extra"]
    assert true_class("lung_aca_2.jpeg", ids) == "lung_aca"
    assert true_class("lung_n_extra_1.png", ids) == "lung_n_extra"   # the longest matching class id
    assert true_class("lung_aca.jpeg", ids) is None and true_class("mine_1.png", ids) is None


def test_running_an_example_shows_its_true_class(tmp_path, monkeypatch):
    folder = write_tiny_model_folder(tmp_path / "model")
    examples = tmp_path / "examples"
    examples.mkdir()
    example = write_test_image(examples / "alpha_1.png", seed=3)
    with imported_app(monkeypatch, folder, examples_dir=examples) as app:
        shown = run_ui_event(app, "analyze", [{"path": str(example), "orig_name": "alpha_1.png"}, 0.45, "auto"])
        own = write_test_image(tmp_path / "alpha_2.png", seed=3)   # not an example: no truth shown
        plain = run_ui_event(app, "analyze", [{"path": str(own), "orig_name": "alpha_2.png"}, 0.45, "auto"])
    answer = app.PREDICTOR.analyze(example)
    verdict = "right" if answer.label == "alpha" else "wrong"
    assert "**True class (test-split example):** Alpha tissue — " in shown["verdict"]
    assert f"the model is {verdict}" in shown["verdict"] or "**the model is wrong**" in shown["verdict"]
    assert "True class" not in plain["verdict"]
