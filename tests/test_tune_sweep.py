"""Real sweeps on the tiny phantoms: the leaderboard matches the trials, ASHA stops a bad trial,
only the winner (chosen on validation) is tested, once, and exported, MLflow holds the sweep and its trials, and a sweep whose
driver was killed resumes without running its finished trial again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from medray.tune.leaderboard import build_leaderboard
from medray.tune.space import load_sweep
from medray.tune.sweep import grid_order, resume_sweep, run_sweep

from conftest import DEMO_CONFIG, ROOT

# lr=10 blows the weights up: its validation loss after one epoch is far above the others'.
GOOD_LRS, BAD_LR = [0.003, 0.01], 10.0


def write_sweep(folder: Path, data: Path, output: Path, extra_set: dict | None = None, **changes) -> Path:
    sweep = {
        "name": "tiny", "base": str(DEMO_CONFIG), "search": "grid", "metric": "val_loss",
        "set": {"data": {"path": str(data)}, "model": {"input_size": 32},
                "train": {"epochs": 3, "batch_size": 16, "lr_plateau_patience": 0},
                "explain": {"enabled": False, "batch_size": 16}, "report": {"enabled": True},
                "output": {"dir": str(output)}},
        "asha": {"enabled": True, "grace_period": 1, "reduction_factor": 2},
        "resources": {"workers_per_trial": 1, "cpus_per_worker": 0.5, "max_concurrent_trials": 1},
        "space": {"train.lr": {"choice": [*GOOD_LRS, BAD_LR]}},
        # A grid runs in a seeded random order; seed 6's order runs the bad trial last, when the rung
        # already holds two results (checked in `finished_sweep`).
        "seed": 6,
    }
    sweep.update(changes)
    sweep["set"].update(extra_set or {})
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


@pytest.fixture(scope="module")
def finished_sweep(tiny_dataset, tmp_path_factory, ray_cluster):
    folder = tmp_path_factory.mktemp("sweep")
    path = write_sweep(folder, tiny_dataset / "parquet", folder / "results", extra_set={"tracking": {"enabled": True}})
    sweep, base = load_sweep(path)
    assert grid_order(sweep)[-1] == {"train.lr": BAD_LR}
    return run_sweep(sweep, base)


def test_the_leaderboard_has_one_row_per_trial_with_its_parameters(finished_sweep):
    sweep_dir = finished_sweep.sweep_dir
    board = pd.read_csv(sweep_dir / "leaderboard.csv")
    trials = sorted(path.parent.name for path in sweep_dir.glob("*/params.json"))
    assert sorted(board["trial"]) == trials and len(trials) == 3
    for _, row in board.iterrows():
        params = json.loads((sweep_dir / row["trial"] / "params.json").read_text())
        assert row["train.lr"] == params["train.lr"]
        epochs = pd.read_json(sweep_dir / row["trial"] / "result.json", lines=True)["epoch"]
        assert row["epochs"] == epochs.max()
    assert list(board["rank"]) == [1, 2, 3]
    ranked = board.dropna(subset=["val_loss"])["val_loss"]
    assert ranked.is_monotonic_increasing  # best validation loss first
    assert (sweep_dir / "leaderboard.md").read_text().count("\n") == 2 + len(trials)
    assert (sweep_dir / "leaderboard.png").stat().st_size > 0


def test_asha_stops_the_bad_trial_after_its_first_rung(finished_sweep):
    board = pd.read_csv(finished_sweep.sweep_dir / "leaderboard.csv")
    bad = board[board["train.lr"] == BAD_LR].iloc[0]
    assert bad["stop_reason"] == "ASHA stopped" and bad["epochs"] == 1
    assert bad["rank"] == 3
    assert set(board["stop_reason"]) <= {"completed", "ASHA stopped"}
    assert board["epochs"].max() == 3  # the best trial ran its whole budget


def test_only_the_winner_chosen_on_validation_is_tested_once_and_exported_with_its_config(finished_sweep):
    sweep_dir = finished_sweep.sweep_dir
    board = pd.read_csv(sweep_dir / "leaderboard.csv")
    top = board.iloc[0]
    assert pd.notna(top["test_accuracy"]) and board["test_accuracy"].iloc[1:].isna().all()
    assert [path.parent.name for path in sweep_dir.glob("*/metrics.json")] == [top["trial"]]
    assert [path.parent.name for path in sweep_dir.glob("*/predictions.parquet")] == [top["trial"]]
    assert top["chosen_by"] == "val_loss (validation split)" and board["chosen_by"].iloc[1:].isna().all()
    selection = json.loads((sweep_dir / "selection.json").read_text())
    assert selection["winner"] == top["trial"] and selection["chosen_on"] == "validation"
    assert selection["metric"] == "val_loss" and selection["value"] == pytest.approx(top["val_loss"])
    assert selection["test"]["trials_evaluated"] == [top["trial"]]
    assert selection["test"]["accuracy"] == pytest.approx(top["test_accuracy"])
    summary = (sweep_dir / "summary.txt").read_text()
    assert f"best       {top['trial']}, chosen on the validation split by val_loss" in summary
    assert "(the winner alone, evaluated once)" in summary
    metrics = json.loads((sweep_dir / top["trial"] / "metrics.json").read_text())
    assert top["test_accuracy"] == pytest.approx(metrics["accuracy"])
    assert (sweep_dir / top["trial"] / "predictions.parquet").is_file()
    assert (sweep_dir / "best" / "model.keras").read_bytes() == (sweep_dir / top["trial"] / "model.keras").read_bytes()
    best_config = yaml.safe_load((sweep_dir / "best" / "config.yaml").read_text())
    assert best_config["train"]["lr"] == top["train.lr"]
    assert "leaderboard" in (sweep_dir / "report.html").read_text()


def test_the_leaderboard_is_rebuilt_from_the_folder_alone(finished_sweep, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(finished_sweep.sweep_dir, copy, ignore=shutil.ignore_patterns("checkpoints"))
    (copy / "leaderboard.csv").unlink()
    from medray.cli import main

    assert main(["report", str(copy)]) == 0
    rebuilt = pd.read_csv(copy / "leaderboard.csv")
    pd.testing.assert_frame_equal(rebuilt, pd.read_csv(finished_sweep.sweep_dir / "leaderboard.csv"))
    assert build_leaderboard(copy)["trial"].tolist() == rebuilt["trial"].tolist()


def test_mlflow_holds_the_sweep_as_a_parent_run_with_one_child_per_trial(finished_sweep):
    from mlflow import MlflowClient

    sweep_dir = finished_sweep.sweep_dir
    client = MlflowClient(tracking_uri=(sweep_dir.parent / "mlruns").as_uri())
    runs = client.search_runs([client.get_experiment_by_name("medray").experiment_id])
    parents = [run for run in runs if run.data.tags.get("medray.kind") == "sweep"]
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 3
    assert {run.info.run_name for run in children} == {path.parent.name for path in sweep_dir.glob("*/params.json")}
    artifacts = {item.path for item in client.list_artifacts(parents[0].info.run_id)}
    assert {"leaderboard.csv", "leaderboard.md", "leaderboard.png", "sweep.yaml"} <= artifacts
    # The first trial in the grid's order always runs its whole budget (a rung needs results to compare with).
    board = pd.read_csv(sweep_dir / "leaderboard.csv")
    completed_trial = board.loc[board["stop_reason"] == "completed", "trial"].iloc[0]
    completed = next(run for run in children if run.info.run_name == completed_trial)
    history = client.get_metric_history(completed.info.run_id, "val_loss")
    assert sorted(metric.step for metric in history) == [1, 2, 3]


def test_a_sweep_killed_after_its_first_trial_resumes_without_rerunning_it(tiny_dataset, tmp_path, ray_cluster):
    path = write_sweep(tmp_path, tiny_dataset / "parquet", tmp_path / "results", name="killed",
                       asha={"enabled": False}, space={"train.lr": {"choice": GOOD_LRS}},
                       extra_set={"report": {"enabled": False}})
    sweep_yaml = yaml.safe_load(path.read_text())
    sweep_yaml["set"]["train"]["epochs"] = 1
    path.write_text(yaml.safe_dump(sweep_yaml))
    # The driver joins the session's cluster, so killing it ends its trials but not the cluster.
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address,
           "TUNE_GLOBAL_CHECKPOINT_S": "0"}
    driver = subprocess.Popen([sys.executable, "-m", "medray.cli", "tune", "--config", str(path)], cwd=ROOT,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    finished, printed = "", []
    deadline = time.monotonic() + 240
    for line in driver.stdout:
        printed.append(line)
        if line.startswith("trial ") and "completed" in line:
            finished = line.split()[1]
            break
        assert time.monotonic() < deadline, "no trial finished in time"
    time.sleep(3)  # Tune writes its experiment state right after a trial ends
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    sweep_dir = tmp_path / "results" / "killed"
    done = sweep_dir / finished
    # The kill came after one trial had trained to its end, and before the sweep finished.
    assert finished and (done / "outcome.json").is_file()
    # A trial's Ray Data progress bars stay out of the console (they go to the sweep's log).
    assert not [line for line in printed if "row/s" in line or "Queued blocks" in line], printed
    assert not (sweep_dir / "leaderboard.csv").exists()
    before = {name: (done / name).read_bytes() for name in ("result.json", "outcome.json")}
    # The trial function writes these two; Tune may rewrite result.json (same content) on restore.
    stamps = {name: (done / name).stat().st_mtime_ns for name in ("config.yaml", "outcome.json")}

    outcome = resume_sweep(str(sweep_dir))

    board = outcome.leaderboard
    assert len(board) == 2 and set(board["stop_reason"]) == {"completed"}
    assert {name: (done / name).read_bytes() for name in before} == before
    assert {name: (done / name).stat().st_mtime_ns for name in stamps} == stamps
