"""``space/uploads.py``: an upload's file is deleted as its request reads it."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from gradio.utils import get_upload_folder

from imageclf.core.imaging import ImageError
from imageclf.settings import Settings
from tests.support.hostile_corpus import with_limits
from uploads import GONE, UploadJanitor


@pytest.fixture
def janitor(tmp_path) -> UploadJanitor:
    return UploadJanitor(tmp_path / "gradio")


def _upload(janitor: UploadJanitor, name: str = "tile.png", digest: str = "ab12", data: bytes = b"pixels") -> str:
    path = janitor.folder / digest / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def test_take_returns_the_bytes_and_deletes_the_file_then_later_its_folder(tmp_path):
    janitor = UploadJanitor(tmp_path / "gradio", folder_grace_s=0.3)
    path = _upload(janitor)
    assert janitor.take(path) == b"pixels"
    assert not os.path.exists(path)
    # The folder outlives the file: an identical upload answered a moment ago is still being moved in.
    assert os.path.isdir(os.path.dirname(path))
    time.sleep(0.4)
    janitor.take(_upload(janitor, "other.png", "cd34"))  # any later request tidies up
    assert not os.path.exists(os.path.dirname(path))


def test_identical_upload_moved_in_after_the_first_request_is_taken_too(tmp_path):
    """Gradio moves an upload into ``<hash>/`` after answering the upload: a second identical upload
    lands in the folder the first request has just emptied, and is read and deleted in its turn."""
    janitor = UploadJanitor(tmp_path / "gradio", keep_s=0)
    path = _upload(janitor)
    assert janitor.take(path) == b"pixels"
    Path(path).write_bytes(b"pixels")  # the background move of the identical upload: the folder must exist
    assert janitor.take(path) == b"pixels" and not os.path.exists(path)


def test_identical_upload_queued_behind_is_served_from_memory_then_forgotten(tmp_path):
    janitor = UploadJanitor(tmp_path / "gradio", keep_s=0.3)
    path = _upload(janitor)  # two requests uploaded the same bytes under the same name: one file
    assert janitor.take(path) == b"pixels"
    assert janitor.take(path) == b"pixels"  # the second request, after the file is gone
    time.sleep(0.4)  # keep_s later
    with pytest.raises(ImageError, match="no longer on the server"):
        janitor.take(path)
    assert GONE.endswith("please send it again.")


def test_nothing_kept_in_memory_when_disabled_or_too_big(tmp_path):
    for janitor in (UploadJanitor(tmp_path / "a", keep_s=0), UploadJanitor(tmp_path / "b", keep_bytes=3)):
        path = _upload(janitor)
        janitor.take(path)
        with pytest.raises(ImageError, match="no longer on the server"):
            janitor.take(path)


def test_memory_cap_drops_the_oldest(tmp_path):
    janitor = UploadJanitor(tmp_path / "g", keep_bytes=10)
    first, second = _upload(janitor, "a.png", "01", b"123456"), _upload(janitor, "b.png", "02", b"abcdef")
    janitor.take(first), janitor.take(second)
    assert janitor.take(second) == b"abcdef"
    with pytest.raises(ImageError):
        janitor.take(first)


def test_oversized_upload_is_refused_and_still_deleted(janitor, monkeypatch):
    with_limits(monkeypatch, {"MAX_IMAGE_BYTES": 3})
    path = _upload(janitor)
    with pytest.raises(ImageError, match="The file is too large"):
        janitor.take(path)
    assert not os.path.exists(path)


def test_concurrent_takes_of_one_file_all_get_the_bytes(janitor):
    path = _upload(janitor, data=os.urandom(4096))
    expected = Path(path).read_bytes()
    results: list[bytes | str] = []
    threads = [threading.Thread(target=lambda: results.append(janitor.take(path))) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert results == [expected] * 16 and not os.path.exists(path)


def test_files_outside_the_upload_folder_are_never_touched(janitor, tmp_path):
    outside = tmp_path / "example.png"
    outside.write_bytes(b"x")
    escape = janitor.folder / "cd34" / "link.png"
    escape.parent.mkdir(parents=True)
    escape.symlink_to(outside)  # inside by name, outside in fact
    for path in (str(outside), str(escape), str(janitor.folder / ".." / "example.png")):
        assert janitor.take(path) == path
    assert outside.read_bytes() == b"x" and escape.is_symlink()


def test_with_a_registry_only_recorded_uploads_are_taken(janitor):
    upload, example = _upload(janitor, "tile.png", "ab12"), _upload(janitor, "example.png", "ef56")
    janitor.registry = {upload}  # what Gradio's /upload route recorded (demo.upload_file_set)
    assert janitor.take(upload) == b"pixels" and not os.path.exists(upload)
    assert janitor.take(example) == example and os.path.isfile(example)  # Gradio's example copy stays


def test_claim_yields_the_path_then_deletes_the_file_and_later_its_folder(tmp_path):
    janitor = UploadJanitor(tmp_path / "gradio", folder_grace_s=0.3)
    path = _upload(janitor, "scan.svs")
    with janitor.claim(path) as claimed:
        assert str(claimed) == path and Path(claimed).read_bytes() == b"pixels"   # a library opens it here
    assert not os.path.exists(path) and os.path.isdir(os.path.dirname(path))
    time.sleep(0.4)
    janitor.take(_upload(janitor, "other.png", "cd34"))  # any later request tidies up, as after take
    assert not os.path.exists(os.path.dirname(path))


def test_claim_deletes_the_file_when_the_block_fails(janitor):
    path = _upload(janitor, "scan.svs")
    with pytest.raises(RuntimeError), janitor.claim(path):
        raise RuntimeError("scoring failed")
    assert not os.path.exists(path)


def test_concurrent_claims_share_the_file_and_the_last_one_deletes_it(janitor):
    path = _upload(janitor, "scan.svs")
    with janitor.claim(path):
        with janitor.claim(path):          # a second request of the same bytes, the same file
            pass
        assert os.path.isfile(path)        # the first request is still reading it
    assert not os.path.exists(path)
    with pytest.raises(ImageError, match="no longer on the server"), janitor.claim(path):
        pass


def test_claim_leaves_other_files_alone(janitor, tmp_path):
    outside = tmp_path / "example.svs"
    outside.write_bytes(b"x")
    unrecorded = _upload(janitor, "example.svs", "ef56")
    janitor.registry = {str(janitor.folder / "ab12" / "tile.png")}
    for path in (str(outside), unrecorded):
        with janitor.claim(path) as claimed:
            assert str(claimed) == path
        assert os.path.isfile(path)


def test_upload_folder_follows_gradio_temp_dir(monkeypatch, tmp_path):
    assert Settings.from_env({"GRADIO_TEMP_DIR": str(tmp_path / "uploads")}).upload_dir == tmp_path / "uploads"
    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)

    assert Settings.from_env({}).upload_dir.resolve() == Path(get_upload_folder()).resolve()
