"""The running Space (``python space/app.py``, tiny model) under hostile input, load and a soak.

One Space serves the whole module: the hostile corpus through ``gradio_client``, then a
normal image (it must still answer), the upload-cache check, and short runs of
``scripts/perf/load_test.py`` and ``scripts/perf/soak_test.py`` (the long runs are not unit tests).
Only the error text and the presence of a ``label`` are asserted: the /predict outputs may grow.
"""
from __future__ import annotations

import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError

from scripts.perf import load_test, soak_test
from scripts.perf.local_space import SpaceProcess
from scripts.perf.traffic import has_label
from scripts.predict_client import connect
from tests.support.hostile_corpus import LIMITS, corpus
from tests.support.tiny_model import write_test_image

FIGURE = r"\d+\.\d+"


@pytest.fixture(scope="module")
def upload_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gradio_uploads")


@pytest.fixture(scope="module")
def space(tiny_folder, upload_dir):
    env = {**{key: str(value) for key, value in LIMITS.items()}, "GRADIO_TEMP_DIR": str(upload_dir),
           "HF_HUB_DISABLE_XET": "1"}
    with SpaceProcess(model_dir=tiny_folder, env=env) as process:
        yield process


@pytest.fixture(scope="module")
def client(space):
    return connect(space.url)


def test_hostile_corpus_gets_answers_or_clear_messages_and_the_space_keeps_serving(space, client, tmp_path):
    problems = []
    for case in corpus():
        path = tmp_path / case.name / case.filename
        path.parent.mkdir()
        path.write_bytes(case.data)
        try:
            answer = client.predict(handle_file(str(path)), api_name="/predict")
        except AppError as err:
            message = str(err)
            if not case.error or case.error not in message or re.search(r"Traceback|cv2|PIL", message):
                problems.append(f"{case.name}: unexpected error {message!r}")
            continue
        if case.error or not has_label(answer):
            problems.append(f"{case.name}: expected {case.error!r}, got answer {str(answer)[:120]}")
    assert not problems, "\n".join(problems)
    normal = write_test_image(tmp_path / "normal.png", size=(224, 224), seed=1)
    assert has_label(client.predict(handle_file(str(normal)), api_name="/predict"))
    assert "Traceback" not in space.output()


def test_uploads_are_removed_after_the_request(client, upload_dir, tmp_path):
    """No uploaded image stays in GRADIO_TEMP_DIR once its request is answered (or refused)."""
    good = write_test_image(tmp_path / f"keep-out-{uuid.uuid4().hex}.png", seed=7)
    bad = tmp_path / f"keep-out-{uuid.uuid4().hex}.jpg"
    bad.write_bytes(b"not an image at all")
    assert has_label(client.predict(handle_file(str(good)), api_name="/predict"))
    with pytest.raises(AppError, match="text, not an image"):
        client.predict(handle_file(str(bad)), api_name="/predict")
    left = [p for p in upload_dir.rglob("keep-out-*")]
    assert left == [], f"uploads still in {upload_dir}: {[str(p) for p in left]}"


def test_load_script_short_run(space, capsys):
    assert load_test.main(["--url", space.url, "--clients", "8", "--requests", "3"]) == 0
    out = capsys.readouterr().out
    assert "load test: 8 clients x 3 requests = 24 requests" in out
    assert "failures: 0 of 24" in out
    assert re.search(rf"throughput: {FIGURE} requests/s", out)
    assert re.search(rf"latency: p50 {FIGURE} s, p95 {FIGURE} s, max {FIGURE} s", out)


def test_soak_script_short_run_starts_its_own_space(tiny_folder, capsys):
    argv = ["--model-dir", str(tiny_folder), "--requests", "60", "--every", "20", "--warmup", "2"]
    assert soak_test.main(argv) == 0
    out = capsys.readouterr().out
    assert re.search(r"soak test: 60 sequential requests to http://127\.0\.0\.1:\d+ \(server pid \d+\)", out)
    assert re.search(rf"RSS at start: {FIGURE} MB \(after 2 warm-up requests\)", out)
    assert len(re.findall(rf"RSS after (20|40|60) requests: {FIGURE} MB", out)) == 3
    assert re.search(r"RSS growth: [+-]\d+\.\d MB over 60 requests; failures: 0", out)


def test_identical_concurrent_uploads_leave_nothing_behind(space, upload_dir, tmp_path):
    """Clients sending the same bytes over and over share one upload path, so one request's clean-up
    meets another's upload in flight; every request is answered, no temporary copy is left in
    GRADIO_TEMP_DIR and the server logs no error."""
    image = write_test_image(tmp_path / f"keep-out-same-{uuid.uuid4().hex}.png", size=(224, 224), seed=8)

    def send_repeatedly(client) -> list:
        return [client.predict(handle_file(str(image)), api_name="/predict") for _ in range(15)]

    clients = [connect(space.url) for _ in range(8)]
    with ThreadPoolExecutor(len(clients)) as pool:
        answers = [answer for batch in pool.map(send_repeatedly, clients) for answer in batch]
    assert len(answers) == 120 and all(has_label(answer) for answer in answers)
    time.sleep(0.5)  # Gradio's background moves of the last uploads
    left = [p for p in upload_dir.rglob("*") if p.is_file() and (p.name.startswith("tmp") or "keep-out-same" in p.name)]
    assert left == [], f"left in {upload_dir}: {[str(p) for p in left]}"
    assert "Traceback" not in space.output()
