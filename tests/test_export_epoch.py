"""train.export_epoch: the trainer exports the best epoch by the monitor or the last one."""

from __future__ import annotations

import json
from pathlib import Path

import ray.train

from medray.config import TrainConfig
from medray.train.loop import CHECKPOINT_MODEL, CHECKPOINT_STATE
from medray.train.trainer import export_model

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
