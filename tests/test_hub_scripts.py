"""`scripts.release.push_model` / `scripts.release.deploy_space` against the local Hub, with the real `huggingface_hub` client."""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from huggingface_hub import HfApi, ModelCard, SpaceCard, hf_hub_download
from huggingface_hub.errors import (EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                    RevisionNotFoundError)

from scripts.release.deploy_space import (ModelRevisionNotFoundError, UnpinnedRevisionError, UnpinnedRevisionWarning,
                                          deploy_space, main as deploy_main)
from scripts.release.push_model import (HubAuthError, HubUnreachableError, MissingFilesError, build_commit_message,
                                        main as push_main, push_model)
from tests.support.hub_server import fast_hub_retries
from training.data.catalog import describe
from training.export.card import write_model_card

ROOT = Path(__file__).resolve().parents[1]
SHA_RE = re.compile(r"^[0-9a-f]{40}$")
REPO, SPACE = "testuser/lung-classifier", "testuser/lung-demo"
MODEL_FILES = ("model.keras", "labels.json", "config.json", "metrics.json", "README.md")


def make_model_folder(path: Path, *, version: int = 1, metrics: bool = True) -> Path:
    """A model-like folder: binary `model.keras` (goes through LFS) and small text files."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "model.keras").write_bytes(b"PK\x03\x04" + bytes([version]) * 2048 + os.urandom(64))
    (path / "labels.json").write_text(json.dumps(["lung_aca", "lung_n", "lung_scc"][: 2 + (version > 1)]))
    (path / "config.json").write_text(json.dumps({"image_size": 224, "version": version}))
    (path / "README.md").write_text(f"---\nlicense: mit\nlibrary_name: keras\n---\n# Lung classifier v{version}\n")
    if metrics:
        (path / "metrics.json").write_text(json.dumps({"accuracy": 0.9531, "macro_f1": 0.951, "per_class": {}}))
    return path


def make_space_folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "app.py").write_text("import os\nMODEL_REPO = os.environ['MODEL_REPO']\n")
    (path / "requirements.txt").write_text("keras\n")
    (path / "__pycache__").mkdir(exist_ok=True)
    (path / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\x00junk")
    return path


def download(repo_id: str, filename: str, revision: str, **kwargs) -> bytes:
    return Path(hf_hub_download(repo_id, filename, revision=revision, **kwargs)).read_bytes()


def test_push_returns_sha_and_files_download_by_sha(local_hub, tmp_path):
    folder = make_model_folder(tmp_path / "hub_model")
    sha = push_model(folder, repo_id=REPO)
    assert SHA_RE.match(sha)
    for name in MODEL_FILES:
        assert download(REPO, name, sha) == (folder / name).read_bytes()
    api = HfApi()
    assert api.list_repo_refs(REPO).branches[0].target_commit == sha
    assert api.list_repo_commits(REPO)[0].title == "Upload model: test accuracy 0.953, macro-F1 0.951"
    # model.keras went through the LFS batch API + CDN (not Xet), and no token was sent off-origin
    paths = [(cdn, method, path) for cdn, method, path, _, _ in local_hub.requests]
    assert (False, "POST", f"/{REPO}.git/info/lfs/objects/batch") in paths
    assert any(cdn and method == "PUT" for cdn, method, _ in paths)
    assert not any(cdn and auth for cdn, _, _, _, auth in local_hub.requests)


def test_new_push_gets_new_sha_and_old_sha_keeps_old_content(local_hub, tmp_path):
    v1 = make_model_folder(tmp_path / "v1")
    sha1 = push_model(v1, repo_id=REPO)
    old = {name: (v1 / name).read_bytes() for name in MODEL_FILES}
    v2 = make_model_folder(tmp_path / "v1", version=2)  # same folder, files rewritten
    sha2 = push_model(v2, repo_id=REPO)
    assert SHA_RE.match(sha2) and sha2 != sha1
    for name in ("model.keras", "labels.json", "config.json"):
        assert download(REPO, name, sha1) == old[name]
        assert download(REPO, name, sha2) == (v2 / name).read_bytes() != old[name]
    assert download(REPO, "labels.json", "main") == (v2 / "labels.json").read_bytes()
    assert push_model(v2, repo_id=REPO) == sha2  # nothing changed: no new commit


def test_push_examples_and_message_without_metrics(local_hub, tmp_path):
    folder = make_model_folder(tmp_path / "m", metrics=False)
    examples = tmp_path / "examples"
    examples.mkdir()
    (examples / "lung_aca.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    (examples / "lung_n.jpeg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 100)
    (examples / "notes.txt").write_text("not an image")
    sha = push_model(folder, repo_id=REPO, examples=examples)
    files = HfApi().list_repo_files(REPO, revision=sha)
    assert {"examples/lung_aca.png", "examples/lung_n.jpeg"} <= set(files)
    assert "examples/notes.txt" not in files and "metrics.json" not in files
    assert HfApi().list_repo_commits(REPO)[1].title == "Upload model"


def test_commit_message_from_metrics():
    assert build_commit_message({"accuracy": 0.9531, "macro_f1": 0.951}) == \
        "Upload model: test accuracy 0.953, macro-F1 0.951"
    assert build_commit_message({"accuracy": 0.9}) == "Upload model: test accuracy 0.900"
    assert build_commit_message({"accuracy": "n/a", "loss": 0.1}) == "Upload model"
    assert build_commit_message(None) == "Upload model"


def test_push_missing_files_fails_before_any_request(local_hub, tmp_path):
    folder = make_model_folder(tmp_path / "m")
    (folder / "labels.json").unlink()
    (folder / "README.md").unlink()
    with pytest.raises(MissingFilesError, match="labels.json, README.md"):
        push_model(folder, repo_id=REPO)
    with pytest.raises(MissingFilesError, match="does not exist"):
        push_model(tmp_path / "nope", repo_id=REPO)
    assert local_hub.requests == []


def test_push_endpoint_down_then_back(local_hub, tmp_path):
    folder = make_model_folder(tmp_path / "m")
    local_hub.stop()
    start = time.monotonic()
    with pytest.raises(HubUnreachableError, match=re.escape(local_hub.endpoint)):
        push_model(folder, repo_id=REPO)
    assert time.monotonic() - start < 5  # fails fast, no long retry loop
    local_hub.start()  # same port, same data
    assert SHA_RE.match(push_model(folder, repo_id=REPO))


def test_push_auth_failures(local_hub, tmp_path, monkeypatch):
    folder = make_model_folder(tmp_path / "m")
    with pytest.raises(HubAuthError, match="rejected the token"):
        push_model(folder, repo_id=REPO, token="hf_not_a_valid_token")
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubAuthError, match="no Hugging Face token"):
        push_model(folder, repo_id=REPO)


def test_cli_prints_only_the_sha_and_one_line_errors(local_hub, tmp_path, capsys):
    folder = make_model_folder(tmp_path / "m")
    assert push_main(["--repo-id", REPO, "--folder", str(folder)]) == 0
    out = capsys.readouterr().out
    assert SHA_RE.match(out.strip()) and out.count("\n") == 1
    with pytest.raises(SystemExit) as exc:
        push_main(["--repo-id", REPO, "--folder", str(tmp_path / "missing")])
    assert str(exc.value).startswith("push_model: error:") and "\n" not in str(exc.value)


def test_cli_subprocess_uses_env_endpoint(local_hub, tmp_path):
    folder = make_model_folder(tmp_path / "m")
    env = {**os.environ, **local_hub.env, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "scripts.release.push_model", "--repo-id", REPO, "--folder", str(folder)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert SHA_RE.match(proc.stdout.strip())
    assert proc.stdout.strip() == HfApi().list_repo_refs(REPO).branches[0].target_commit
    assert local_hub.token not in proc.stdout + proc.stderr


def test_deploy_space_pins_model_via_variables(local_hub, tmp_path):
    model_sha = push_model(make_model_folder(tmp_path / "m"), repo_id=REPO)
    space = make_space_folder(tmp_path / "space")
    space_sha = deploy_space(space_id=SPACE, model_repo=REPO, model_revision=model_sha, space_dir=space)
    assert SHA_RE.match(space_sha)
    variables = HfApi().get_space_variables(SPACE)
    assert variables["MODEL_REPO"].value == REPO and variables["MODEL_REVISION"].value == model_sha
    files = HfApi().list_repo_files(SPACE, repo_type="space", revision=space_sha)
    assert {"app.py", "requirements.txt", "README.md"} <= set(files)
    assert not any("__pycache__" in f for f in files)
    assert download(SPACE, "app.py", space_sha, repo_type="space") == (space / "app.py").read_bytes()
    assert HfApi().space_info(SPACE).sdk == "gradio"


def test_deploy_ships_an_example_slide_with_its_licence_note(local_hub, tmp_path):
    model_sha = push_model(make_model_folder(tmp_path / "m"), repo_id=REPO)
    slide = tmp_path / "example.svs"
    slide.write_bytes(b"II*\x00" + bytes(range(256)) * 8)       # any bytes: the Space reads it, not the deploy
    space_sha = deploy_space(space_id=SPACE, model_repo=REPO, model_revision=model_sha,
                             space_dir=make_space_folder(tmp_path / "space"), example_slide=slide)
    files = set(HfApi().list_repo_files(SPACE, repo_type="space", revision=space_sha))
    assert {"example_slides/example.svs", "example_slides/README.md"} <= files
    assert download(SPACE, "example_slides/example.svs", space_sha, repo_type="space") == slide.read_bytes()
    assert "CC0" in download(SPACE, "example_slides/README.md", space_sha, repo_type="space").decode()


def test_deploy_refuses_branch_unless_allowed(local_hub, tmp_path):
    push_model(make_model_folder(tmp_path / "m"), repo_id=REPO)
    space = make_space_folder(tmp_path / "space")
    for revision in ("main", "v1.0", "abc1234"):
        with pytest.raises(UnpinnedRevisionError, match="--allow-branch"):
            deploy_space(space_id=SPACE, model_repo=REPO, model_revision=revision, space_dir=space)
    assert not HfApi().repo_exists(SPACE, repo_type="space")  # refused before touching the Hub
    with pytest.warns(UnpinnedRevisionWarning, match="moving revision 'main'"):
        deploy_space(space_id=SPACE, model_repo=REPO, model_revision="main", space_dir=space, allow_branch=True)
    assert HfApi().get_space_variables(SPACE)["MODEL_REVISION"].value == "main"


def test_deploy_unknown_model_revision(local_hub, tmp_path):
    push_model(make_model_folder(tmp_path / "m"), repo_id=REPO)
    with pytest.raises(ModelRevisionNotFoundError, match="not found"):
        deploy_space(space_id=SPACE, model_repo=REPO, model_revision="0" * 40,
                     space_dir=make_space_folder(tmp_path / "space"))


def test_client_errors_match_the_hub(local_hub, tmp_path):
    sha = push_model(make_model_folder(tmp_path / "m"), repo_id=REPO)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "model.keras", revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "model.keras", revision="f" * 40)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "missing.bin", revision=sha)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("testuser/no-such-repo", "model.keras")
    with pytest.raises(RevisionNotFoundError):
        HfApi().model_info(REPO, revision="no-such-branch")


def test_token_never_printed_or_logged(local_hub, tmp_path, capfd, caplog):
    caplog.set_level(logging.DEBUG)
    model = make_model_folder(tmp_path / "m")
    sha = push_model(model, repo_id=REPO)
    assert push_main(["--repo-id", REPO, "--folder", str(model)]) == 0
    with pytest.warns(UnpinnedRevisionWarning):
        deploy_space(space_id=SPACE, model_repo=REPO, model_revision="main", allow_branch=True,
                     space_dir=make_space_folder(tmp_path / "space"))
    deploy_space(space_id=SPACE, model_repo=REPO, model_revision=sha, space_dir=tmp_path / "space")
    with pytest.raises(HubAuthError) as auth_error:
        push_model(model, repo_id=REPO, token="hf_wrong_token_abc")
    local_hub.stop()
    with pytest.raises(HubUnreachableError) as down_error:
        push_model(model, repo_id=REPO)
    captured = capfd.readouterr()
    text = captured.out + captured.err + caplog.text + str(auth_error.value) + str(down_error.value)
    assert caplog.records  # the client did log (at DEBUG), so the check below means something
    assert local_hub.token not in text and "hf_wrong_token_abc" not in text


def test_hub_down_download_uses_cache_or_fails_fast(local_hub, tmp_path):
    sha = push_model(make_model_folder(tmp_path / "m"), repo_id=REPO)
    cached = download(REPO, "labels.json", sha)
    local_hub.stop()
    assert download(REPO, "labels.json", sha) == cached  # pinned sha: served from the cache, no request
    start = time.monotonic()
    with fast_hub_retries(), pytest.raises(LocalEntryNotFoundError):
        hf_hub_download(REPO, "config.json", revision=sha)  # not cached: the client retries, then gives up
    assert time.monotonic() - start < 5


def test_deploy_cli_refuses_branch_in_one_line(local_hub, tmp_path, capsys):
    args = ["--space-id", SPACE, "--model-repo", REPO, "--space-dir", str(make_space_folder(tmp_path / "s"))]
    with pytest.raises(SystemExit) as exc:
        deploy_main([*args, "--model-revision", "main"])
    assert str(exc.value).startswith("deploy_space: error: model revision 'main' is not a full")
    sha = push_model(make_model_folder(tmp_path / "m"), repo_id=REPO)
    assert deploy_main([*args, "--model-revision", sha]) == 0
    assert SHA_RE.match(capsys.readouterr().out.strip())


# --- Hub metadata: the YAML headers the Space README and the model card carry on the Hub --------------------

def read_yaml_header(text: str) -> tuple[dict, str]:
    """(header, body) of a README with a `---` YAML header."""

    match = re.match(r"^---\n(.*?)\n---\n", text, re.DOTALL)
    assert match, f"no YAML header in {text[:80]!r}"
    return yaml.safe_load(match.group(1)), text[match.end():]


def test_deploy_writes_models_into_the_space_readme(local_hub, tmp_path):
    model_sha = push_model(make_model_folder(tmp_path / "m"), repo_id=REPO)
    space = make_space_folder(tmp_path / "space")
    original = (ROOT / "space" / "README.md").read_text(encoding="utf-8")
    (space / "README.md").write_text(original, encoding="utf-8")
    space_sha = deploy_space(space_id=SPACE, model_repo=REPO, model_revision=model_sha, space_dir=space)
    uploaded = download(SPACE, "README.md", space_sha, repo_type="space").decode()
    header, body = read_yaml_header(uploaded)
    want, want_body = read_yaml_header(original)
    assert header["models"] == [REPO]
    assert {k: v for k, v in header.items() if k != "models"} == want  # every other key kept, in order
    assert list(header)[:-1] == list(want) and body == want_body
    assert header["license"] == "mit" and header["sdk"] == "gradio" and header["app_file"] == "app.py"
    assert (space / "README.md").read_text(encoding="utf-8") == original  # the local folder is untouched
    # The Hub's own parser reads the same metadata.

    assert SpaceCard(uploaded).data.models == [REPO]


def test_deploy_without_a_space_readme_writes_a_minimal_one(local_hub, tmp_path):
    model_sha = push_model(make_model_folder(tmp_path / "m"), repo_id=REPO)
    space_sha = deploy_space(space_id=SPACE, model_repo=REPO, model_revision=model_sha,
                             space_dir=make_space_folder(tmp_path / "space"))
    header, _ = read_yaml_header(download(SPACE, "README.md", space_sha, repo_type="space").decode())
    assert header == {"title": "lung-demo", "sdk": "gradio", "app_file": "app.py", "models": [REPO]}


def test_redeploy_replaces_models_and_bad_yaml_stops_before_any_request(local_hub, tmp_path):
    other = "testuser/other-model"
    sha = push_model(make_model_folder(tmp_path / "m"), repo_id=other)
    space = make_space_folder(tmp_path / "space")
    (space / "README.md").write_text(f"---\nsdk: gradio\nmodels:\n- {REPO}\n---\nbody\n", encoding="utf-8")
    space_sha = deploy_space(space_id=SPACE, model_repo=other, model_revision=sha, space_dir=space)
    header, body = read_yaml_header(download(SPACE, "README.md", space_sha, repo_type="space").decode())
    assert header == {"sdk": "gradio", "models": [other]} and body == "body\n"
    (space / "README.md").write_text("---\nsdk: [gradio\n---\n", encoding="utf-8")
    local_hub.requests.clear()
    with pytest.raises(ValueError, match="YAML header"):
        deploy_space(space_id=SPACE, model_repo=other, model_revision=sha, space_dir=space)
    assert local_hub.requests == []


def _card_inputs(data: str | None = None) -> dict:
    config = json.loads((ROOT / "hub_model" / "config.json").read_text())
    if data is not None:
        config = {**config, "training_run": {**config["training_run"], "data": data}}
    return dict(config=config, labels=json.loads((ROOT / "hub_model" / "labels.json").read_text()),
                metrics=json.loads((ROOT / "hub_model" / "metrics.json").read_text()),
                info=describe(config["training_run"]["data"]))


def test_model_card_yaml_on_the_hub_states_the_licence_and_dataset(local_hub, tmp_path):
    folder = make_model_folder(tmp_path / "m")
    write_model_card(folder, **_card_inputs())  # the lung model's card, as training writes it
    sha = push_model(folder, repo_id=REPO)
    text = download(REPO, "README.md", sha).decode()
    header, body = read_yaml_header(text)
    assert header["license"] == "other" and header["license_name"] == "lc25000-terms"
    assert header["license_link"] == "https://github.com/tampapath/lung_colon_image_set"
    assert header["datasets"] == ["1aurent/LC25000"]
    assert header["library_name"] == "keras" and header["pipeline_tag"] == "image-classification"
    card = ModelCard(text)  # the Hub client's own parser agrees
    assert card.data.license_name == "lc25000-terms" and card.data.datasets == ["1aurent/LC25000"]
    licence = body.split("\n## Licence\n", 1)[1].split("\n## ", 1)[0]
    assert "arXiv:1912.12142" in licence and "publish no" in licence and "MIT" in licence
    # The committed card was generated by this code: same header.
    committed, _ = read_yaml_header((ROOT / "hub_model" / "README.md").read_text(encoding="utf-8"))
    assert committed == header


def test_model_card_of_a_dataset_without_recorded_terms_says_unknown(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    write_model_card(folder, **_card_inputs(data="some-other-dataset"))
    header, body = read_yaml_header((folder / "README.md").read_text(encoding="utf-8"))
    assert header["license"] == "unknown"
    assert not {"license_name", "license_link", "datasets"} & set(header)
    assert "## Licence" in body and "not recorded here" in body


def test_code_licence_and_space_licence_agree():
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License\n")
    header, _ = read_yaml_header((ROOT / "space" / "README.md").read_text(encoding="utf-8"))
    assert header["license"] == "mit"  # the Space repo holds only code


def test_the_tissue_gate_arms_are_nested_under_where_the_model_fails(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "tissue_gate.md").write_text("## The arms\n| arm | refused |\n|---|---|\n| current | 48 |\n")
    write_model_card(folder, **_card_inputs())
    assert "The arms" not in (folder / "README.md").read_text()     # no stress report: no section to join
    (folder / "stress.md").write_text("intro\n\n| set | n |\n|---|---|\n| lung-tcga | 52 |\n")
    write_model_card(folder, **_card_inputs())
    section = (folder / "README.md").read_text().split("\n## Where this model fails", 1)[1].split("\n## ", 1)[0]
    assert section.index("| lung-tcga | 52 |") < section.index("\n### The arms\n") < section.index("| current | 48 |")
    committed = (ROOT / "hub_model" / "README.md").read_text(encoding="utf-8")
    assert "### Can \"not lung\" mean organ rather than lab?" in committed   # the bundled card carries the arms
