"""The driver side of training: a TensorflowTrainer built from the run config, its best (or last)
checkpoint exported as `model.keras`, and worker failures turned into one readable error."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray.train
from ray.train.tensorflow import TensorflowTrainer

from medray import storage
from medray.config import RunConfig
from medray.data.pipeline import TrainingData
from medray.data.sources import Source
from medray.errors import MedrayError, find_user_error, worker_exception
from medray.models.preprocessing import input_channels
from medray.models.registry import get_backbone
from medray.task import Task
from medray.train.loop import CHECKPOINT_MODEL, CHECKPOINT_STATE, CRASH_AFTER_EPOCH_ENV, train_loop_per_worker


@dataclass(frozen=True)
class TrainingOutcome:
    model_path: Path
    history: list[dict]
    # why a phase ended before its epoch budget (early stopping); empty if none did
    stop_reasons: list[str]
    # the epoch whose model was exported (train.export_epoch) and its metrics
    exported_epoch: int
    exported_metrics: dict


def train_model(config: RunConfig, source: Source, data: TrainingData, image_size: int,
                run_dir: Path, initial_model: bytes | None, task: Task, callbacks: list | None = None,
                checkpoints: str | None = None) -> TrainingOutcome:
    """`task`: the problem's shape (medray.task): head, labels, loss and metrics.
    `callbacks`: Ray Train callbacks, e.g. Tune's TuneReportCallback when a sweep trial trains.
    `checkpoints`: Ray Train's storage (a local path or a URI every node reaches), default
    `<run_dir>/checkpoints`; model.keras is exported into `run_dir`."""
    filesystem, storage_path = storage.resolve(checkpoints or run_dir / "checkpoints")
    train_labels = [label for piece in source.pieces["train"] for label in piece["labels"]]
    trainer = TensorflowTrainer(
        train_loop_per_worker,
        train_loop_config={
            "run": config.model_dump(mode="json"),
            "task": task.kind,
            "class_names": list(task.class_names),
            "image_size": image_size,
            **task.balance(np.asarray(train_labels), config.train.class_balance),
            "initial_model": initial_model,
            "rows": {"train": data.train_rows, "val": source.num_rows("val")},
            "crash_after_epoch": os.environ.get(CRASH_AFTER_EPOCH_ENV),
            # RGB data gives every backbone 3 input channels, without a round trip through gray
            "channels": input_channels(get_backbone(config.model.backbone).model_input, source.color),
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=config.scaling.num_workers,
            use_gpu=config.scaling.use_gpu,
            resources_per_worker={"CPU": config.scaling.cpus_per_worker},
            placement_strategy=config.scaling.placement_strategy,
        ),
        datasets={"train": data.train, "val": data.val},
        dataset_config=ordered_ingest(),
        run_config=ray.train.RunConfig(
            name="train",
            storage_path=storage_path, storage_filesystem=filesystem,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute=config.train.monitor,
                checkpoint_score_order=config.train.monitor_mode),
            # A failed worker group restarts from the latest checkpoint, up to this many times.
            failure_config=ray.train.FailureConfig(max_failures=config.train.max_failures),
            callbacks=callbacks,
        ),
    )
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as error:
        raise find_user_error(error) or MedrayError(f"training failed: {worker_exception(error)}") from error
    return export_model(result, run_dir, config.train)


def ordered_ingest() -> ray.train.DataConfig:
    """Ray Train's ingest with each epoch's rows in the order the dataset draws them.

    By default Ray Data hands rows on as tasks finish, so a seeded shuffle would still differ
    between reruns; validation keeps one fixed order too.
    """
    options = ray.train.DataConfig.default_ingest_options()
    options.preserve_order = True
    return ray.train.DataConfig(execution_options=options)


def export_model(result: ray.train.Result, run_dir: Path, train_config) -> TrainingOutcome:
    if train_config.export_epoch == "last":
        # The latest checkpoint always survives pruning.
        checkpoint, metrics = result.checkpoint, result.metrics
    else:
        sign = 1 if train_config.monitor_mode == "max" else -1
        checkpoint, metrics = max(result.best_checkpoints, key=lambda pair: sign * pair[1][train_config.monitor])
    model_path = run_dir / "model.keras"
    with checkpoint.as_directory() as directory:
        shutil.copyfile(Path(directory) / CHECKPOINT_MODEL, model_path)
    # The latest checkpoint holds every epoch's metrics.
    with result.checkpoint.as_directory() as directory:
        progress = json.loads((Path(directory) / CHECKPOINT_STATE).read_text())
    return TrainingOutcome(model_path, progress["history"], progress["stop_reasons"], int(metrics["epoch"]),
                           dict(metrics))

