import os, pytest, json
from pathlib import Path
from gradio_client import handle_file
from predictor import Predictor
import tests.test_space_app as t
from tests.tiny_model import write_tiny_model_folder, run_space

def test_dry(tmp_path, monkeypatch):
    folder = write_tiny_model_folder(tmp_path / "hub_model", input_size=(224, 224),
        labels=[("lung_aca", "Lung adenocarcinoma"), ("lung_n", "Benign lung tissue"), ("lung_scc", "Lung squamous cell carcinoma")])
    monkeypatch.setattr(t, "REAL_MODEL", folder)
    real_run_space = t.run_space
    monkeypatch.setattr(t, "run_space", lambda d, **kw: real_run_space(folder, **kw))
    t.test_real_model_on_real_tiles()
