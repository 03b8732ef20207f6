"""MLflow tracking: off by default; with `tracking.enabled: true` a run's params, per-epoch
metrics, test metrics and artifacts land in a local file store under the results folder.

The session's shared tiny run (conftest's `finished_run`) has tracking on and serves the
end-to-end tests of this module; a real binary run's plots are pinned on PneumoniaMNIST
(test_report_pneumonia)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from medray.config import TrackingConfig, load_config
from medray.errors import MedrayError
from medray.tracking import log_run, tracking_uri

from conftest import DEMO_CONFIG
from test_report_build import CALIBRATED_RUN_PLOTS, write_run_folder

def mlflow_client(uri: str):
    from mlflow import MlflowClient

    # medray's default store is MLflow's file store, which MLflow 3 opens only when asked to
    # (medray asks in the process that logs; the shared run logged in its own process).
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MlflowClient(tracking_uri=uri)


def only_run(uri: str, experiment: str = "medray"):
    client = mlflow_client(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def test_tracking_is_off_by_default_and_the_report_on():
    config = load_config(DEMO_CONFIG)
    assert config.tracking.enabled is False and config.report.enabled is True


def test_tracked_run_has_its_params_in_the_store_under_results(finished_run):
    uri = (finished_run.parent / "mlruns").as_uri()
    _, run = only_run(uri)
    assert run.info.run_name == "tiny" and run.info.status == "FINISHED"
    assert run.data.params["data.path"].endswith("parquet") and run.data.params["model.backbone"] == "baseline_cnn"
    assert run.data.params["train.epochs"] == "2" and run.data.params["model.input_size"] == "32"


def test_tracked_run_has_every_epoch_and_the_test_metrics(finished_run):
    uri = (finished_run.parent / "mlruns").as_uri()
    client, run = only_run(uri)
    history = pd.read_csv(finished_run / "history.csv")
    for name in ("loss", "val_loss", "val_auc"):
        logged = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, name))
        assert [step for step, _ in logged] == list(history["epoch"])
        assert [value for _, value in logged] == pytest.approx(list(history[name]))
    metrics = json.loads((finished_run / "metrics.json").read_text())
    for name in ("accuracy", "macro_f1", "roc_auc_ovr", "expected_calibration_error"):
        assert run.data.metrics[f"test_{name}"] == pytest.approx(metrics[name])
    assert run.data.metrics["test_recall.no_lesion"] == pytest.approx(metrics["per_class"][0]["recall"])


def test_tracked_run_has_the_report_and_plots_as_artifacts(finished_run):
    uri = (finished_run.parent / "mlruns").as_uri()
    client, run = only_run(uri)
    top = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert {"report.html", "metrics.json", "config.yaml", "history.csv", "predictions.parquet", "plots"} <= top
    plots = {Path(item.path).name for item in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == CALIBRATED_RUN_PLOTS
    stored = Path(run.info.artifact_uri.removeprefix("file://")) / "metrics.json"
    assert stored.read_text() == (finished_run / "metrics.json").read_text()


def test_tracking_uri_from_the_config_is_used_instead_of_the_default(tmp_path):
    run_dir = tmp_path / "results" / "run"
    write_run_folder(run_dir, ["a", "b"])
    elsewhere = (tmp_path / "elsewhere").as_uri()
    log_run(run_dir, TrackingConfig(enabled=True, uri=elsewhere, experiment="other"), tmp_path / "results")
    assert not (tmp_path / "results" / "mlruns").exists()
    _, run = only_run(elsewhere, "other")
    assert run.data.metrics["loss"] == pytest.approx(0.5)  # the last epoch of the hand-made history


def test_default_store_is_a_folder_next_to_the_runs(tmp_path):
    assert tracking_uri(TrackingConfig(), tmp_path / "results") == (tmp_path / "results" / "mlruns").as_uri()


def test_an_unusable_tracking_uri_names_the_key_and_keeps_the_results(tmp_path):
    run_dir = tmp_path / "run"
    write_run_folder(run_dir, ["a", "b"])
    with pytest.raises(MedrayError, match=r"tracking\.uri=nosuch://x: could not log run run .* complete in"):
        log_run(run_dir, TrackingConfig(enabled=True, uri="nosuch://x"), tmp_path)


def test_an_undefined_per_class_metric_is_left_out_not_logged_as_a_number(tmp_path):
    """A class absent from the test split has precision, recall and F1 None in metrics.json."""
    from medray.tracking import run_metrics

    (tmp_path / "metrics.json").write_text(json.dumps({"accuracy": 0.5, "per_class": [
        {"class": "normal", "precision": 0.5, "recall": 1.0, "f1": 0.667, "support": 4},
        {"class": "rare", "precision": None, "recall": None, "f1": None, "support": 0}]}))
    logged = {name: value for name, value, _ in run_metrics(tmp_path)}
    assert logged["test_recall.normal"] == 1.0 and logged["test_accuracy"] == 0.5
    assert not any(name.endswith(".rare") for name in logged)
