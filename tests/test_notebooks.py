"""The training notebooks run top to bottom (papermill), on tiny data and a local Hub."""
from __future__ import annotations

import json
from pathlib import Path

import papermill
import pytest

from tests.test_data_splits import make_split_dataset
from training.data.samples import read_manifest

from .conftest import ROOT

NOTEBOOKS = ROOT / "training" / "notebooks"


def run_notebook(name: str, output: Path, **parameters) -> None:
    papermill.execute_notebook(
        str(NOTEBOOKS / name), str(output), parameters=parameters, cwd=str(NOTEBOOKS),
        kernel_name="python3", progress_bar=False,
    )


@pytest.fixture(scope="module")
def notebook_model(tmp_path_factory, tiny_dataset) -> Path:
    """The model folder written by notebook 01 on the tiny dataset."""
    work = tmp_path_factory.mktemp("nb1")
    run_notebook("01_train_evaluate.ipynb", work / "out.ipynb", data=str(tiny_dataset),
                 manifest=str(work / "manifest.csv"), out=str(work / "model"), epochs=2, input_size=32, work_size=0)
    executed = json.loads((work / "out.ipynb").read_text())
    images = [o for c in executed["cells"] for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # sample tiles, training curves, confusion matrix shown inline
    return work / "model"


def test_train_notebook_writes_the_hub_folder(notebook_model):
    assert {"model.keras", "labels.json", "config.json", "metrics.json", "README.md"} <= {
        p.name for p in notebook_model.iterdir()}


def test_push_notebook_round_trips_through_the_hub(tmp_path, notebook_model, local_hub):
    # local_hub exported HF_ENDPOINT, HF_HOME and a fake HF_TOKEN; the kernel inherits them.
    run_notebook("02_push_to_hub.ipynb", tmp_path / "out.ipynb", folder=str(notebook_model),
                 repo_id="tester/notebook-model", endpoint=local_hub.endpoint)
    executed = (tmp_path / "out.ipynb").read_text()
    assert "pin this revision in the Space:" in executed
    assert "max difference between pinned download and local model: 0.0" in executed


def test_train_notebook_takes_another_dataset_layout_and_a_class_map(tmp_path):
    data = make_split_dataset(tmp_path / "data", per_class=(30, 6))  # train/ and test/ folders, no valid/
    run_notebook("01_train_evaluate.ipynb", tmp_path / "out.ipynb", data=str(data), manifest=str(tmp_path / "m.csv"),
                 out=str(tmp_path / "model"), epochs=1, input_size=32, work_size=0, model_name="split-test",
                 class_map="beta=other,gamma=other")
    labels = json.loads((tmp_path / "model" / "labels.json").read_text())
    assert [labels[str(i)]["id"] for i in range(len(labels))] == ["alpha", "other"]
    rows = read_manifest(tmp_path / "m.csv")
    assert {s.split for s in rows if s.path.startswith("test/")} == {"test"}
    assert {s.path.split("/")[0] for s in rows if s.split == "val"} == {"train"}
