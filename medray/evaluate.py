"""Predict the test split with a Ray Data actor pool, then score it with scikit-learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import ray

from medray.data.pipeline import one_batch_per_block
from medray.models.actor import ModelActor
from medray.task import Task


class Predictor(ModelActor):
    def __init__(self, model_bytes: bytes, backbone_name: str, task: Task):
        super().__init__(model_bytes, backbone_name)
        self.task = task

    def __call__(self, batch: dict) -> dict:
        outputs = np.asarray(self.model.predict_on_batch(self.model_input(batch["pixels"])), dtype=np.float32)
        return {"row_id": batch["row_id"], "label": batch["label"],
                "probabilities": self.task.class_probabilities(outputs)}


def predict(decoded: ray.data.Dataset, model_bytes: bytes, backbone_name: str, task: Task,
            batch_size: int, concurrency: int, thresholds: list[float] | None = None) -> pd.DataFrame:
    """One row per image: row_id, label, prediction, confidence and the class probabilities (the
    task's table: medray.task); `thresholds` per label for a multi-label task."""
    scored = one_batch_per_block(decoded, batch_size).map_batches(
        Predictor, fn_constructor_kwargs={"model_bytes": model_bytes, "backbone_name": backbone_name, "task": task},
        batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=concurrency),
    )
    batches = list(scored.iter_batches(batch_size=None))
    return task.prediction_table(np.concatenate([batch["row_id"] for batch in batches]).astype(str),
                                 np.concatenate([batch["label"] for batch in batches]),
                                 np.concatenate([batch["probabilities"] for batch in batches]), thresholds)


def predictions_from_maps(maps_dir: Path, task: Task, thresholds: list[float] | None = None) -> pd.DataFrame:
    """The same table from the bulk explain job's output, which holds every test image's probabilities
    (once per map): a run that explains its test split need not decode and predict it a second time."""
    maps = pq.read_table(maps_dir, columns=["row_id", "labels", "probabilities"]).to_pandas()
    images = maps.drop_duplicates("row_id")
    labels = np.stack(images["labels"].to_numpy()).astype(np.int64).reshape(len(images), *task.label_shape)
    return task.prediction_table(images["row_id"].to_numpy(str), labels,
                                 np.stack(images["probabilities"].to_numpy()).astype(np.float32), thresholds)


def compute_metrics(predictions: pd.DataFrame, task: Task, thresholds: list[float] | None = None) -> dict:
    """metrics.json: the scikit-learn scores of the predictions table (see medray.report.metrics)."""
    return task.metrics(predictions, thresholds)
