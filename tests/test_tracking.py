"""Optional MLflow tracking: a tiny run logged to a temporary local store and read back."""
from __future__ import annotations

import sys

import pytest

from training.runtime.tracking import TrackingUnavailable, flatten, tracking_requested
from training.train import TrainConfig, parse_args, train

from .conftest import missing


def test_tracking_is_off_unless_asked_for():
    assert not tracking_requested(False, env={})
    assert tracking_requested(True, env={})
    assert tracking_requested(False, env={"MLFLOW_TRACKING_URI": "sqlite:///x.db"})
    assert parse_args(["--mlflow", "--mlflow-experiment", "ct"]).mlflow is True
    assert flatten({"a": 1, "b": {"c": 0.5, "d": "text"}, "e": True}) == {"a": 1.0, "b/c": 0.5}


def test_mlflow_flag_without_mlflow_installed_says_what_to_install(monkeypatch, tiny_dataset, tmp_path):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ImportError
    with pytest.raises(TrackingUnavailable, match="requirements-tracking.txt"):
        train(TrainConfig(allow_dirty=True, data=str(tiny_dataset), out=str(tmp_path / "m"), mlflow=True, verbose=0))
    assert not (tmp_path / "m" / "model.keras").exists()  # it stopped before training


def test_a_run_logs_params_epochs_test_metrics_and_the_model_folder(monkeypatch, tiny_dataset, tmp_path):
    try:
        import mlflow  # deferred: optional (requirements-tracking.txt); only this test reads its store
    except ImportError:
        missing("mlflow is not installed (pip install -r requirements-tracking.txt)",
                ci_hint="make setup installs requirements-tracking.txt")
    store = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)  # the environment alone switches tracking on
    metrics = train(TrainConfig(allow_dirty=True, data=str(tiny_dataset), out=str(tmp_path / "model"), input_size=32, work_size=None,
                                epochs=3, batch_size=16, verbose=0, mlflow_experiment="tiny"))

    client = mlflow.MlflowClient(tracking_uri=store)
    [run] = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "model"
    assert run.data.params["epochs"] == "3" and run.data.params["data"] == str(tiny_dataset)
    for name in ("loss", "val_loss", "val_accuracy"):  # one value per epoch, from the Keras callback
        assert [m.step for m in client.get_metric_history(run.info.run_id, name)] == [0, 1, 2]
    assert run.data.metrics["test/accuracy"] == pytest.approx(metrics["accuracy"])
    assert run.data.metrics["test/calibration/temperature"] == pytest.approx(metrics["calibration"]["temperature"])
    assert run.data.metrics["training/epochs_run"] == 3
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert {"model/model.keras", "model/config.json", "model/metrics.json", "model/README.md"} <= artifacts
