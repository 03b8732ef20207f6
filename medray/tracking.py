"""MLflow experiment tracking of a finished run, read from the files the run wrote.

Everything is logged by the driver after the run: the resolved config as params, every epoch of
`history.csv` as metrics with step = epoch, the test metrics of `metrics.json`, and the run's
small files (report, plots, predictions) as artifacts. Reading the run folder rather than live
objects means a train run and each trial of a sweep are logged by the same function.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pandas as pd
import yaml

from medray.errors import MedrayError
from medray.filenames import safe_filename

# The files worth keeping next to the numbers; model, checkpoints and per-image maps stay in the run folder.
ARTIFACT_FILES = ["config.yaml", "data.json", "history.csv", "metrics.json", "predictions.parquet",
                  "summary.txt", "report.html", "confusion_matrix.png", "calibration.json"]
ARTIFACT_DIRS = ["plots"]
TEST_METRICS = ["accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "roc_auc_ovr",
                "expected_calibration_error", "expected_calibration_error_calibrated"]
PER_CLASS_METRICS = ["precision", "recall", "f1"]
# A sweep's parent run: its leaderboard and report (each trial's own files go with its child run).
SWEEP_FILE = "sweep.yaml"
SWEEP_ARTIFACTS = [SWEEP_FILE, "base.yaml", "leaderboard.csv", "leaderboard.md", "leaderboard.png"]


def tracking_uri(tracking_config, output_dir: Path) -> str:
    """The configured URI, or a local file store at <output.dir>/mlruns."""
    return tracking_config.uri or (Path(output_dir) / "mlruns").resolve().as_uri()


def log_run(run_dir: Path, tracking_config, output_dir: Path, tags: dict[str, str] | None = None) -> str:
    """Log one finished run folder to MLflow; return the MLflow run id."""
    try:
        from mlflow import MlflowClient
        from mlflow.entities import Metric, Param
    except ImportError:
        raise MedrayError("tracking.enabled is true but mlflow is not installed; "
                          "`pip install mlflow-skinny` or set tracking.enabled: false") from None
    uri = tracking_uri(tracking_config, output_dir)
    if uri.startswith("file:"):
        # MLflow 3 refuses its file store unless asked for it; medray's default store is one, by design:
        # a folder next to the results that needs no database or server.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    run_dir = Path(run_dir)
    params = config_params(run_dir)
    logged_at = int(time.time() * 1000)
    metrics = [Metric(key, value, logged_at, step) for key, value, step in run_metrics(run_dir)]
    try:
        client = MlflowClient(tracking_uri=uri)
        experiment_id = experiment_id_for(client, tracking_config.experiment)
        run = client.create_run(experiment_id, run_name=run_dir.name,
                                tags={"medray.run_dir": str(run_dir.resolve()), **(tags or {})})
        run_id = run.info.run_id
        # MLflow takes at most 100 params and 1000 metrics per batch.
        for start in range(0, len(params), 100):
            client.log_batch(run_id, params=[Param(k, v) for k, v in params[start:start + 100]])
        for start in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[start:start + 1000])
        for name in ARTIFACT_FILES:
            if (run_dir / name).is_file():
                client.log_artifact(run_id, str(run_dir / name))
        for name in ARTIFACT_DIRS:
            if (run_dir / name).is_dir():
                client.log_artifacts(run_id, str(run_dir / name), artifact_path=name)
        client.set_terminated(run_id)
    except Exception as error:  # noqa: BLE001  (MLflow raises many types for a bad URI or a full disk)
        raise MedrayError(
            f"tracking.uri={uri}: could not log run {run_dir.name} to MLflow ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); the run's results are complete in {run_dir}; "
            "fix tracking.uri or set tracking.enabled: false") from None
    return run_id


def experiment_id_for(client, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment is not None else client.create_experiment(name)


def log_sweep(sweep_dir: Path, tracking_config, output_dir: Path) -> str:
    """A sweep as one parent MLflow run (the sweep file as params, the leaderboard as artifacts, the
    best trial's scores as metrics) with one child run per trial, logged by `log_run`."""
    sweep_dir = Path(sweep_dir)
    uri = tracking_uri(tracking_config, output_dir)
    # log_run checks that mlflow is installed and sets up the store.
    parent_id = log_run(sweep_dir, tracking_config, output_dir, tags={"medray.kind": "sweep"})
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    try:
        client = MlflowClient(tracking_uri=uri)
        sweep_path = sweep_dir / SWEEP_FILE
        if sweep_path.is_file():
            sweep_params = flatten(yaml.safe_load(sweep_path.read_text()) or {})
            client.log_batch(parent_id, params=[Param(f"sweep.{key}", value[:6000])
                                                for key, value in sorted(sweep_params.items())][:100])
        for name in SWEEP_ARTIFACTS:
            if (sweep_dir / name).is_file():
                client.log_artifact(parent_id, str(sweep_dir / name))
        board_path = sweep_dir / "leaderboard.csv"
        if board_path.is_file():
            best = pd.read_csv(board_path).iloc[0]
            logged_at = int(time.time() * 1000)
            client.log_batch(parent_id, metrics=[
                Metric(f"best_{name}", float(best[name]), logged_at, 0) for name in best.index
                if name.startswith(("val_", "test_")) and isinstance(best[name], (int, float))
                and math.isfinite(best[name])])
    except Exception as error:  # noqa: BLE001
        raise MedrayError(f"tracking.uri={uri}: could not log sweep {sweep_dir.name} to MLflow "
                          f"({type(error).__name__}); the sweep's results are complete in {sweep_dir}; fix "
                          "tracking.uri or set tracking.enabled: false") from None
    for trial_dir in sorted(path.parent for path in sweep_dir.glob("*/params.json")):
        log_run(trial_dir, tracking_config, output_dir,
                tags={"mlflow.parentRunId": parent_id, "medray.kind": "trial", "medray.sweep": sweep_dir.name})
    return parent_id


def config_params(run_dir: Path) -> list[tuple[str, str]]:
    """The resolved config as dotted keys (`train.lr`), each value as MLflow stores it: text."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return []
    return sorted(flatten(yaml.safe_load(path.read_text()) or {}).items())


def flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, list) else str(value)
    return flat


def run_metrics(run_dir: Path) -> list[tuple[str, float, int]]:
    """(key, value, step): every epoch of history.csv at step = epoch, then the test metrics at step 0."""
    rows = []
    history_path = run_dir / "history.csv"
    if history_path.is_file():
        history = pd.read_csv(history_path)
        epochs = history["epoch"] if "epoch" in history.columns else pd.Series(range(1, len(history) + 1))
        for column in history.columns.drop("epoch", errors="ignore"):
            if pd.api.types.is_numeric_dtype(history[column]):
                rows += [(safe_filename(column), float(value), int(epoch))
                         for epoch, value in zip(epochs, history[column]) if math.isfinite(value)]
    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        rows += [(f"test_{name}", float(metrics[name]), 0) for name in TEST_METRICS
                 if isinstance(metrics.get(name), (int, float))]
        for row in metrics.get("per_class", []):
            # an undefined ratio (a class absent from the test split) is None in metrics.json: not logged
            rows += [(f"test_{name}.{safe_filename(row['class'])}", float(row[name]), 0) for name in PER_CLASS_METRICS
                     if row.get(name) is not None]
    return rows
