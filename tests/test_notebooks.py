"""The training notebooks run top to bottom (papermill), on tiny data and a local Hub."""
from __future__ import annotations

import json
from pathlib import Path

import papermill
import pytest

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
