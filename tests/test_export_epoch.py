"""train.export_epoch: the trainer exports the best epoch by the monitor or the last one, and a
sweep's leaderboard ranks each trial by the epoch it exports."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import ray.train
import yaml

from medray.config import TrainConfig
from medray.train.loop import CHECKPOINT_MODEL, CHECKPOINT_STATE
from medray.train.trainer import export_model
from medray.tune.leaderboard import build_leaderboard

# val_loss per epoch: the best is epoch 2, the last epoch 3.
VAL_LOSSES = {1: 0.20, 2: 0.10, 3: 0.30}


def checkpoint(folder: Path, epoch: int) -> tuple[ray.train.Checkpoint, dict]:
    folder.mkdir(parents=True)
    (folder / CHECKPOINT_MODEL).write_text(f"model after epoch {epoch}")
    metrics = {"epoch": epoch, "val_loss": VAL_LOSSES[epoch], "val_auc": 0.9}
    history = [{"epoch": e, "val_loss": VAL_LOSSES[e]} for e in range(1, epoch + 1)]
    (folder / CHECKPOINT_STATE).write_text(json.dumps({"history": history, "stop_reasons": []}))
    return ray.train.Checkpoint.from_directory(str(folder)), metrics


def training_result(tmp_path: Path) -> ray.train.Result:
    # What Ray Train keeps with num_to_keep=2 scored by val_loss: epochs 1 and 2; the latest (3) always.
    kept = [checkpoint(tmp_path / f"epoch{epoch}", epoch) for epoch in VAL_LOSSES]
    latest, latest_metrics = kept[-1]
    return ray.train.Result(metrics=latest_metrics, checkpoint=latest, error=None, path=str(tmp_path),
                            best_checkpoints=kept[:2] + [kept[-1]])


def test_the_trainer_exports_the_best_epoch_by_the_monitor_or_the_last_one(tmp_path):
    result = training_result(tmp_path / "checkpoints")
    for export_epoch, expected in (("best", 2), ("last", 3)):
        run_dir = tmp_path / export_epoch
        run_dir.mkdir()
        outcome = export_model(result, run_dir, TrainConfig(monitor="val_loss", export_epoch=export_epoch))
        assert outcome.model_path.read_text() == f"model after epoch {expected}"
        assert outcome.exported_epoch == expected
        assert outcome.exported_metrics["val_loss"] == VAL_LOSSES[expected]
        assert [row["epoch"] for row in outcome.history] == [1, 2, 3]


def write_trial(sweep_dir: Path, name: str, val_aucs: list[float], export_epoch: str) -> None:
    trial_dir = sweep_dir / name
    trial_dir.mkdir()
    (trial_dir / "params.json").write_text(json.dumps({"train.lr": 0.001}))
    (trial_dir / "config.yaml").write_text(yaml.safe_dump({"train": {"export_epoch": export_epoch}}))
    rows = [{"epoch": epoch, "val_auc": auc, "val_accuracy": 0.9, "val_loss": 0.3}
            for epoch, auc in enumerate(val_aucs, start=1)]
    (trial_dir / "result.json").write_text("\n".join(json.dumps(row) for row in rows) + "\n")


def leaderboard(tmp_path: Path, export_epoch: str) -> pd.DataFrame:
    sweep_dir = tmp_path / export_epoch
    sweep_dir.mkdir()
    (sweep_dir / "sweep.yaml").write_text(yaml.safe_dump({
        "name": "s", "base": "base.yaml", "metric": "val_auc", "space": {"train.lr": {"choice": [0.001]}}}))
    # Trial a peaks early and falls; trial b ends higher than a ends.
    write_trial(sweep_dir, "a", [0.99, 0.90], export_epoch)
    write_trial(sweep_dir, "b", [0.93, 0.95], export_epoch)
    return build_leaderboard(sweep_dir).set_index("trial")


def test_the_leaderboard_ranks_each_trial_by_the_epoch_it_exports(tmp_path):
    best = leaderboard(tmp_path, "best")
    assert best["rank"].to_dict() == {"a": 1, "b": 2}
    assert best.loc["a", ["exported_epoch", "val_auc"]].tolist() == pytest.approx([1, 0.99])

    last = leaderboard(tmp_path, "last")
    assert last["rank"].to_dict() == {"b": 1, "a": 2}
    assert last.loc["a", ["exported_epoch", "val_auc"]].tolist() == pytest.approx([2, 0.90])
    assert last.loc["b", ["exported_epoch", "val_auc"]].tolist() == pytest.approx([2, 0.95])
