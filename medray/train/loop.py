"""What every Ray Train worker runs: data-parallel tf-keras training under
MultiWorkerMirroredStrategy, one report (and, on rank 0, one checkpoint) per epoch."""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import ray.train

from medray.config import RunConfig
from medray.keras_setup import keras, tf
from medray.models.applications import set_trainable_top
from medray.models.classifier import KERAS_V3, build_classifier, copy_weights, load_model_bytes, load_model_file
from medray.models.registry import get_backbone
from medray.train.progress import Progress

CHECKPOINT_MODEL = "model.keras"
CHECKPOINT_STATE = "state.json"
# Fault injection for the crash-resume test, read by the driver: "<epoch>:<flag file>" makes
# rank 0 die once, right after that epoch's checkpoint.
CRASH_AFTER_EPOCH_ENV = "MEDRAY_CRASH_AFTER_EPOCH"


def train_loop_per_worker(loop_config: dict) -> None:
    config = RunConfig.model_validate(loop_config["run"])
    num_classes, image_size = loop_config["num_classes"], loop_config["image_size"]
    context = ray.train.get_context()
    workers, rank = context.get_world_size(), context.get_world_rank()

    # Before any TensorFlow op runs: collective ops can only be configured at startup.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        # Built without pretrained weights: the driver resolved them once and sends them along,
        # so workers never download anything.
        random_init = config.model.model_copy(update={"weights": "none"})
        model = build_classifier(get_backbone(config.model.backbone), image_size, num_classes, random_init)
        if loop_config["initial_model"] is not None:
            copy_weights(load_model_bytes(loop_config["initial_model"]), model)
    progress = restore_checkpoint(model, ray.train.get_checkpoint())

    shards = {"train": ray.train.get_dataset_shard("train"), "val": ray.train.get_dataset_shard("val")}
    while True:
        if progress.phase_done(config.train):
            if progress.phase == 1 and config.train.fine_tune.epochs > 0:
                progress.next_phase()
            else:
                break
        with strategy.scope():
            compile_for_phase(model, progress, config, num_classes)
        train_phase(model, strategy, shards, progress, loop_config, config, workers, rank)


def train_phase(model: keras.Model, strategy, shards: dict, progress: Progress, loop_config: dict,
                config: RunConfig, workers: int, rank: int) -> None:
    """The rest of the current phase in one `model.fit`; each epoch's validation, report and
    checkpoint happen in its `on_epoch_end`.

    One fit over datasets that repeat, rather than one fit per epoch: a fit ends by destroying its
    tf.data iterator, and that waits for Ray Data's generator behind it, which took 10 to 30 s at
    the end of some epochs on 2 CPUs (an epoch of 10 s of work then measured 200 images/s, not 400).
    """
    num_classes, per_worker_batch = loop_config["num_classes"], config.train.batch_size // workers
    train_batches, train_steps = per_replica_batches(strategy, shards["train"], loop_config["rows"]["train"],
                                                     per_worker_batch, workers, num_classes,
                                                     loop_config["class_weights"])
    val_batches, val_steps = per_replica_batches(strategy, shards["val"], loop_config["rows"]["val"],
                                                 per_worker_batch, workers, num_classes, [])
    epoch_end = EpochEnd(progress, config, iter(val_batches), val_steps, strategy, rank, loop_config)
    remaining = progress.phase_budget(config.train) - progress.phase_epochs
    model.fit(train_batches, epochs=remaining, steps_per_epoch=train_steps, verbose=0, callbacks=[epoch_end])


class EpochEnd(keras.callbacks.Callback):
    """Per epoch: the learning rate the plateau rule set, validation, metrics, report and checkpoint."""

    def __init__(self, progress: Progress, config: RunConfig, val_iterator, val_steps: int, strategy, rank: int,
                 loop_config: dict):
        super().__init__()
        self.progress, self.config, self.strategy, self.rank = progress, config, strategy, rank
        self.val_iterator, self.val_steps = val_iterator, val_steps
        self.train_rows, self.crash_after_epoch = loop_config["rows"]["train"], loop_config.get("crash_after_epoch")
        self.started = 0.0

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self.model.optimizer.learning_rate.assign(self.progress.learning_rate(self.config.train))
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        train_seconds = time.perf_counter() - self.started
        progress, train_config, workers = self.progress, self.config.train, self.strategy.num_replicas_in_sync
        metrics = {"epoch": progress.epoch + 1, "phase": progress.phase, "lr": progress.learning_rate(train_config),
                   "replica_weight_spread": replica_weight_spread(self.model, self.strategy),
                   "train_seconds": train_seconds,
                   "images_per_second": self.train_rows // workers * workers / train_seconds,
                   **{name: float(value) for name, value in logs.items()},
                   **{f"val_{name}": value for name, value in self.validate().items()}}
        progress.record(metrics, train_config)
        if self.rank == 0:
            print(format_epoch(metrics, train_config.epochs + train_config.fine_tune.epochs), flush=True)
            if progress.phase_stopped:
                print(progress.phase_stopped, flush=True)
        report_epoch(self.model, metrics, progress, chief=self.rank == 0)
        if self.rank == 0 and self.crash_after_epoch:
            crash_once(metrics["epoch"], self.crash_after_epoch)
        self.model.stop_training = progress.phase_stopped is not None

    def validate(self) -> dict:
        """What `model.evaluate` does, on an iterator that lives as long as the phase."""
        test_function = self.model.make_test_function()
        self.model.reset_metrics()
        for _ in range(self.val_steps):
            test_function(self.val_iterator)
        return {name: float(value) for name, value in self.model.get_metrics_result().items()}


def replica_weight_spread(model: keras.Model, strategy) -> float:
    """Relative spread of a weight digest across all workers: 0.0 when the replicas are in sync.

    Every worker digests its own copy of the weights; an all-gather brings the digests together.
    """
    digest = float(sum(np.sum(np.square(weights, dtype=np.float64)) for weights in model.get_weights()))
    local = strategy.run(lambda: tf.constant([digest], dtype=tf.float64))
    digests = strategy.gather(local, axis=0).numpy()
    return float(np.ptp(digests) / max(abs(digest), 1e-300))


def compile_for_phase(model: keras.Model, progress: Progress, config: RunConfig, num_classes: int) -> None:
    if progress.phase == 2:
        # Only transfer backbones have a second phase: unfreeze the top of everything but the head.
        set_trainable_top(model, config.train.fine_tune.layers)
    model.compile(
        optimizer=keras.optimizers.Adam(progress.learning_rate(config.train)),
        loss=keras.losses.CategoricalCrossentropy(),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy"),
                 keras.metrics.AUC(multi_label=True, num_labels=num_classes, name="auc")],
    )


def per_replica_batches(strategy, shard, rows: int, per_worker_batch: int, workers: int, num_classes: int,
                        class_weights: list[float]):
    """This worker's Ray Data shard as batches of `per_worker_batch`, repeated epoch after epoch,
    and the steps in an epoch.

    Ray Data has already given each worker its own rows (an equal split). Handing the dataset to
    Keras plainly would let tf.distribute treat its batch as the global one and split it again
    across workers; `distribute_datasets_from_function` uses each worker's batches as they are.
    Class weights ride along as per-sample weights: Keras refuses `class_weight` for such datasets.
    """
    weights = tf.constant(class_weights or [1.0] * num_classes, dtype=tf.float32)

    def worker_dataset(_) -> tf.data.Dataset:
        dataset = shard.to_tf(feature_columns="image", label_columns="label", batch_size=per_worker_batch)
        # Each pass of the repeat starts a new epoch of the shard (freshly augmented).
        return dataset.map(lambda image, label: (image, tf.one_hot(label, num_classes), tf.gather(weights, label))
                           ).repeat()

    steps = max(1, math.ceil((rows // workers) / per_worker_batch))
    return strategy.distribute_datasets_from_function(worker_dataset), steps


def report_epoch(model: keras.Model, metrics: dict, progress: Progress, chief: bool) -> None:
    """Report one epoch; the chief's report carries the checkpoint.

    Every worker saves: under MultiWorkerMirroredStrategy reading a sync-on-read variable is a
    collective operation, so a save on the chief alone waits for the others forever.
    """
    with tempfile.TemporaryDirectory() as directory:
        model.save(Path(directory) / CHECKPOINT_MODEL, save_format=KERAS_V3)
        if not chief:
            ray.train.report(metrics)
            return
        (Path(directory) / CHECKPOINT_STATE).write_text(json.dumps(progress.to_json()))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))


def restore_checkpoint(model: keras.Model, checkpoint) -> Progress:
    """Load the weights of the last finished epoch and where training stood then."""
    if checkpoint is None:
        return Progress()
    with checkpoint.as_directory() as directory:
        copy_weights(load_model_file(Path(directory) / CHECKPOINT_MODEL), model)
        progress = Progress.from_json(json.loads((Path(directory) / CHECKPOINT_STATE).read_text()))
    print(f"resuming after epoch {progress.epoch} from {checkpoint.path}", flush=True)
    return progress


def crash_once(epoch: int, marker: str) -> None:
    crash_epoch, _, flag_file = marker.partition(":")
    if epoch == int(crash_epoch) and not Path(flag_file).exists():
        Path(flag_file).write_text("crashed once")
        os._exit(1)  # a hard worker death, as a lost node or an OOM kill looks to Ray Train


def format_epoch(metrics: dict, epochs: int) -> str:
    shown = ("loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc", "lr", "images_per_second")
    values = "  ".join(f"{name} {metrics[name]:.4g}" for name in shown if name in metrics)
    return f"epoch {metrics['epoch']}/{epochs}  {values}"
