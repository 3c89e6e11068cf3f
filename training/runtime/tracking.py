"""Optional experiment tracking with MLflow: parameters, per-epoch metrics, test metrics, model folder.

Off unless ``--mlflow`` is given or ``MLFLOW_TRACKING_URI`` is set. MLflow is an optional extra
(``pip install -r requirements-tracking.txt``, the light ``mlflow-skinny`` client): training works
without it, and ``--mlflow`` without it stops at once with what to install. The default store is
``mlruns/`` in the project (a local file store, git-ignored; MLflow 3 asks for
``MLFLOW_ALLOW_FILE_STORE=true`` to use one, set here for local paths only). Any tracking URI
works: ``sqlite:///mlflow.db`` (needs SQLAlchemy), ``http://tracking-server:5000``, ...

Example:
    >>> tracker = start_tracking(requested=True, experiment="chest-ct", run_name="ct-4class",
    ...                          params=asdict(config))
    >>> model.fit(train_ds, epochs=12, callbacks=[*callbacks, *tracker.callbacks()])
    >>> tracker.finish(metrics, folder="training/exports/chest-ct")   # test/* metrics + artifacts
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras

from imageclf.errors import ModelError

DEFAULT_STORE = Path(__file__).resolve().parents[2] / "mlruns"
MODEL_ARTIFACTS = "model"  # the exported folder is logged under this artifact path


class TrackingUnavailable(ModelError, RuntimeError):
    """Tracking was asked for but MLflow is not installed."""

def tracking_requested(flag: bool, *, env: Mapping[str, str] = os.environ) -> bool:
    """``--mlflow``, or a tracking URI in the environment."""
    return bool(flag or env.get("MLFLOW_TRACKING_URI"))


def flatten(values: Mapping[str, Any], *, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of nested dicts as ``{"a/b": 1.0}`` (MLflow metrics are flat numbers).

    Example:
        >>> flatten({"accuracy": 0.9, "per_class": {"normal": {"recall": 1.0}}, "labels": ["a"]})
        {'accuracy': 0.9, 'per_class/normal/recall': 1.0}
    """
    flat: dict[str, float] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat |= flatten(value, prefix=f"{name}/")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


class Tracker:
    """An MLflow run, or nothing at all (``mlflow=None``): every method is then a no-op."""

    def __init__(self, mlflow=None, run=None) -> None:
        self.mlflow, self.run = mlflow, run

    @property
    def enabled(self) -> bool:
        return self.mlflow is not None

    def callbacks(self) -> list:
        """A Keras callback logging each epoch's ``logs`` (loss, accuracy, val_*) at step = epoch."""
        if not self.enabled:
            return []

        mlflow = self.mlflow

        class EpochLogger(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                mlflow.log_metrics(flatten(logs or {}), step=epoch)

        return [EpochLogger()]

    def finish(self, metrics: Mapping[str, Any] | None = None, *, folder: str | Path | None = None) -> None:
        """Log the final metrics and the exported folder, then end the run.

        Test metrics get a ``test/`` prefix (``test/accuracy``, ``test/per_class/normal/recall``) so they
        never mix with the per-epoch ``accuracy``; the training summary gets ``training/``.
        """
        if not self.enabled:
            return
        if metrics:
            tested = {k: v for k, v in metrics.items() if k not in ("confusion_matrix", "training")}
            self.mlflow.log_metrics(flatten(tested, prefix="test/") |
                                    flatten(metrics.get("training") or {}, prefix="training/"))
        if folder:
            self.mlflow.log_artifacts(str(folder), artifact_path=MODEL_ARTIFACTS)
        self.mlflow.end_run()

    def fail(self) -> None:
        """End the run as FAILED (training raised)."""
        if self.enabled:
            self.mlflow.end_run(status="FAILED")


def start_tracking(*, requested: bool, experiment: str, run_name: str, params: Mapping[str, Any]) -> Tracker:
    """Start an MLflow run when ``requested`` (see :func:`tracking_requested`), else a no-op tracker."""
    if not requested:
        return Tracker()
    try:
        import mlflow  # deferred: optional (requirements-tracking.txt), and 1 s to import
    except ImportError:
        raise TrackingUnavailable(
            "Experiment tracking needs MLflow: pip install -r requirements-tracking.txt "
            "(or drop --mlflow and unset MLFLOW_TRACKING_URI).") from None
    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_STORE.as_uri()
    if "://" not in uri or uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses local file stores otherwise
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment)
    run = mlflow.start_run(run_name=run_name)
    mlflow.log_params({key: value if isinstance(value, (int, float, str)) else json.dumps(value)
                       for key, value in params.items()})
    return Tracker(mlflow, run)
