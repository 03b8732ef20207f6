"""What every Ray Train worker runs: data-parallel tf-keras training under
MultiWorkerMirroredStrategy, one report (and, on rank 0, one checkpoint) per epoch."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import ray.train

from medray.config import RunConfig
from medray.keras_setup import keras, tf
from medray.models.classifier import build_classifier, load_model_file
from medray.models.registry import get_backbone

CHECKPOINT_MODEL = "model.keras"
CHECKPOINT_STATE = "state.json"


def train_loop_per_worker(loop_config: dict) -> None:
    config = RunConfig.model_validate(loop_config["run"])
    num_classes, image_size = loop_config["num_classes"], loop_config["image_size"]
    class_weight = {index: weight for index, weight in enumerate(loop_config["class_weights"])} or None
    context = ray.train.get_context()
    workers, rank = context.get_world_size(), context.get_world_rank()
    per_worker_batch = config.train.batch_size // workers

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        model = build_classifier(get_backbone(config.model.backbone), image_size, num_classes, config.model)
        model.compile(
            optimizer=keras.optimizers.Adam(config.train.lr),
            loss=keras.losses.CategoricalCrossentropy(),
            metrics=[keras.metrics.CategoricalAccuracy(name="accuracy"),
                     keras.metrics.AUC(multi_label=True, num_labels=num_classes, name="auc")],
        )
    history = restore_checkpoint(model, ray.train.get_checkpoint())

    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    for epoch in range(len(history) + 1, config.train.epochs + 1):
        fitted = model.fit(as_tf_dataset(train_shard, per_worker_batch, num_classes),
                           epochs=1, verbose=0, class_weight=class_weight)
        validated = model.evaluate(as_tf_dataset(val_shard, per_worker_batch, num_classes),
                                   verbose=0, return_dict=True)
        metrics = {"epoch": epoch, **{name: float(values[-1]) for name, values in fitted.history.items()},
                   **{f"val_{name}": float(value) for name, value in validated.items()}}
        history.append(metrics)
        if rank == 0:
            print(format_epoch(metrics, config.train.epochs), flush=True)
        report_epoch(model, metrics, history, chief=rank == 0)


def as_tf_dataset(shard, batch_size: int, num_classes: int) -> tf.data.Dataset:
    dataset = shard.to_tf(feature_columns="image", label_columns="label", batch_size=batch_size)
    # Ray Data has already given each worker its own rows; TensorFlow must not shard them again.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options).map(lambda image, label: (image, tf.one_hot(label, num_classes)))


def report_epoch(model: keras.Model, metrics: dict, history: list[dict], chief: bool) -> None:
    """Report one epoch; the chief's report carries the checkpoint.

    Every worker saves: under MultiWorkerMirroredStrategy reading a sync-on-read variable is a
    collective operation, so a save on the chief alone waits for the others forever.
    """
    with tempfile.TemporaryDirectory() as directory:
        model.save(Path(directory) / CHECKPOINT_MODEL)
        if not chief:
            ray.train.report(metrics)
            return
        (Path(directory) / CHECKPOINT_STATE).write_text(json.dumps({"history": history}))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))


def restore_checkpoint(model: keras.Model, checkpoint) -> list[dict]:
    """Load the weights of the last finished epoch; return the history so far ([] if none)."""
    if checkpoint is None:
        return []
    with checkpoint.as_directory() as directory:
        model.set_weights(load_model_file(Path(directory) / CHECKPOINT_MODEL).get_weights())
        history = json.loads((Path(directory) / CHECKPOINT_STATE).read_text())["history"]
    print(f"resuming after epoch {len(history)} from {checkpoint.path}", flush=True)
    return history


def format_epoch(metrics: dict, epochs: int) -> str:
    shown = ("loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc")
    values = "  ".join(f"{name} {metrics[name]:.4f}" for name in shown if name in metrics)
    return f"epoch {metrics['epoch']}/{epochs}  {values}"
