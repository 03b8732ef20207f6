"""What every Ray Train worker runs: data-parallel tf-keras training under
MultiWorkerMirroredStrategy, one report (and, on rank 0, one checkpoint) per epoch."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import ray.train

from medray.config import RunConfig
from medray.data.pipeline import derived_seed
from medray.data.volumes import spatial_shape
from medray.keras_setup import keras, tf
from medray.models.applications import set_trainable_top
from medray.models.classifier import KERAS_V3, build_classifier, copy_weights, load_model_bytes, load_model_file
from medray.models.registry import get_backbone
from medray.train.progress import Progress
from medray.train.threads import share_intra_op_threads
from medray.task import Task, make_task
from medray.train.worker_data import ShardPasses

CHECKPOINT_MODEL = "model.keras"
CHECKPOINT_STATE = "state.json"
# Fault injection for the crash-resume test, read by the driver: "<epoch>:<flag file>" makes
# rank 0 die once, right after that epoch's checkpoint.
CRASH_AFTER_EPOCH_ENV = "MEDRAY_CRASH_AFTER_EPOCH"


def train_loop_per_worker(loop_config: dict) -> None:
    config = RunConfig.model_validate(loop_config["run"])
    task = make_task(loop_config["task"], loop_config["class_names"], loop_config["task"] == "multi_label")
    image_size = loop_config["image_size"]
    class_weights = loop_config["class_weights"]
    context = ray.train.get_context()
    workers, rank = context.get_world_size(), context.get_world_rank()
    per_worker_batch = config.train.batch_size // workers
    # Where each worker runs, in the job's log: on a cluster, which node trained what.
    print(f"worker {rank}/{workers} on node {ray.get_runtime_context().get_node_id()}", flush=True)

    # Before any TensorFlow op runs: thread pools and collective ops can only be configured at startup.
    share_intra_op_threads(context.get_local_world_size())
    # One worker has nothing to all-reduce: TensorFlow's default strategy spares it the collective
    # ops MultiWorkerMirroredStrategy runs every step anyway (7 % of a step of baseline_cnn at 64 px).
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if workers > 1 else tf.distribute.get_strategy()
    with strategy.scope():
        # Built without pretrained weights: the driver resolved them once and sends them along,
        # so workers never download anything.
        random_init = config.model.model_copy(update={"weights": "none"})
        model = build_classifier(get_backbone(config.model.backbone), image_size, task.head, random_init,
                                 channels=loop_config.get("channels"))
        if loop_config["initial_model"] is not None:
            copy_weights(load_model_bytes(loop_config["initial_model"]), model)
    progress = restore_checkpoint(model, ray.train.get_checkpoint())

    image_shape = (*spatial_shape(image_size), loop_config["channels"])
    train = ShardPasses(strategy, ray.train.get_dataset_shard("train"), loop_config["rows"]["train"], per_worker_batch,
                        workers, task, class_weights, image_shape)
    val = ShardPasses(strategy, ray.train.get_dataset_shard("val"), loop_config["rows"]["val"], per_worker_batch,
                      workers, task, [], image_shape)
    total_epochs = config.train.epochs + config.train.fine_tune.epochs
    compiled_phase = None
    while True:
        if progress.phase_done(config.train):
            if progress.phase == 1 and config.train.fine_tune.epochs > 0:
                progress.next_phase()
            else:
                train.discard()
                break
        if compiled_phase != progress.phase:
            with strategy.scope():
                compile_for_phase(model, progress, config, task, loop_config.get("positive_weights"))
            compiled_phase = progress.phase
        model.optimizer.learning_rate.assign(progress.learning_rate(config.train))
        if not train.started:
            train.start(**shuffle_buffer(config, progress.epoch, rank))
        # Ray Data prepares the validation rows while the model trains: they are ready when fit returns.
        val.start()
        started = time.perf_counter()
        fitted = model.fit(train.dataset, epochs=1, steps_per_epoch=train.steps, verbose=0)
        train_seconds = time.perf_counter() - started
        if progress.epoch + 1 < total_epochs:
            # Ray Data prepares the next epoch's rows while this one is validated, saved and reported;
            # discarded below if early stopping ends training here.
            train.start(**shuffle_buffer(config, progress.epoch + 1, rank))
        validated = model.evaluate(val.dataset, steps=val.steps, verbose=0, return_dict=True)
        metrics = {"epoch": progress.epoch + 1, "phase": progress.phase,
                   "lr": progress.learning_rate(config.train),
                   "replica_weight_spread": replica_weight_spread(model, strategy),
                   "train_seconds": train_seconds,
                   "images_per_second": loop_config["rows"]["train"] // workers * workers / train_seconds,
                   **{name: float(values[-1]) for name, values in fitted.history.items()},
                   **{f"val_{name}": float(value) for name, value in validated.items()}}
        progress.record(metrics, config.train)
        if rank == 0:
            print(format_epoch(metrics, config.train.epochs + config.train.fine_tune.epochs), flush=True)
            if progress.phase_stopped:
                print(progress.phase_stopped, flush=True)
        report_epoch(model, metrics, progress, chief=rank == 0)
        if rank == 0 and loop_config.get("crash_after_epoch"):
            crash_once(metrics["epoch"], loop_config["crash_after_epoch"])


def shuffle_buffer(config: RunConfig, epoch: int, rank: int) -> dict:
    """The worker's shuffle buffer under data.shuffle "blocks", seeded by run seed, epoch and rank."""
    if config.data.shuffle != "blocks":
        return {}
    return {"shuffle_buffer_rows": config.data.shuffle_buffer_rows,
            "shuffle_seed": derived_seed(config.seed, "buffer", epoch, rank)}


def replica_weight_spread(model: keras.Model, strategy) -> float:
    """Relative spread of a weight digest across all workers: 0.0 when the replicas are in sync.

    Every worker digests its own copy of the weights; an all-gather brings the digests together.
    """
    digest = float(sum(np.sum(np.square(weights, dtype=np.float64)) for weights in model.get_weights()))
    if strategy.num_replicas_in_sync == 1:
        return 0.0
    local = strategy.run(lambda: tf.constant([digest], dtype=tf.float64))
    digests = strategy.gather(local, axis=0).numpy()
    return float(np.ptp(digests) / max(abs(digest), 1e-300))


def compile_for_phase(model: keras.Model, progress: Progress, config: RunConfig, task: Task,
                      positive_weights: list[float] | None = None) -> None:
    """The task's loss and metrics (`accuracy`, `auc`); `positive_weights`: per label, multi-label only."""
    if progress.phase == 2:
        # Only transfer backbones have a second phase: unfreeze the top of everything but the head.
        set_trainable_top(model, config.train.fine_tune.layers)
    model.compile(optimizer=keras.optimizers.Adam(progress.learning_rate(config.train)),
                  loss=task.loss(config.train, positive_weights), metrics=task.keras_metrics())


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
