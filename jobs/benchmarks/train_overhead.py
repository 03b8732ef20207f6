"""What Ray Train + Ray Data cost over plain Keras, for whole epochs of the same model and data.

An epoch is the same span on both sides: training, validation on the 256-image validation split and
a checkpoint of the model (.keras) written, timed from the end of one epoch to the end of the next.
  medray: baseline_cnn through Ray Train with 1 worker, images decoded by Ray Data in the first
          epoch and kept in the object store (data.cache: auto), reordered every epoch (data.shuffle,
          `full` by default) and preprocessed as they stream; an epoch ends when Ray Train's
          controller has the report of every worker with the checkpoint persisted (a UserCallback's
          after_report), so fit, validation, the checkpoint and the report are all inside it.
  plain:  what a competent user writes in an afternoon: the same model, batch size,
          optimizer and metrics, one `model.fit(train, validation_data=val, epochs=...)` with a
          ModelCheckpoint saving model.keras every epoch, on tf.data pipelines of the already-decoded
          images (from_tensor_slices, shuffle(len) reshuffled every epoch, batch,
          prefetch(AUTOTUNE)), with Ray shut down so TensorFlow has the whole machine; an epoch ends
          in a callback after the checkpoint's. Run twice: as written (tf.data's autotuner on, its
          default) and with the autotuner off (one tf.data.Options line, as medray's own pipeline
          runs), which spares the wait for the autotuner's thread each time Keras replaces an
          iterator (see medray/train/worker_data.py). The faster of the two is the reference.
Augmentation is off in both, so the work is the same. Epochs after the first are timed in both (the
first pays for tracing and start-up, and medray's for decoding).

The two sides run in alternating rounds (medray first in odd rounds, plain first in even ones), so
that a busy spell of the machine hits both; each side's median epoch and its rate over all timed
epochs are printed, as images/s and as a ratio. Compare only within one run.

    python jobs/benchmarks/train_overhead.py --quick     # 1,024 images, 4 epochs, 2 rounds: the README's run
    python jobs/benchmarks/train_overhead.py [--images 4096] [--size 64] [--batch 64] [--epochs 6] [--rounds 3]
    python jobs/benchmarks/train_overhead.py --quick --shuffle blocks
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from ray.train import UserCallback

from medray.config import validate_config
from medray.data.synth import write_demo_dataset
from medray.job import prepare_job
from medray.keras_setup import keras, tf
from medray.models.classifier import build_classifier
from medray.models.preprocessing import to_model_input
from medray.models.registry import get_backbone
from medray.train.trainer import train_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=6, help="epochs per run; all but the first are timed")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each side, alternating")
    parser.add_argument("--quick", action="store_true",
                        help="a smaller measurement (under 5 minutes) that still alternates the sides")
    parser.add_argument("--shuffle", choices=["full", "blocks"], default="full", help="medray's data.shuffle")
    args = parser.parse_args()
    if args.quick:
        args.images, args.epochs, args.rounds = 1024, 4, 2
    rates_of = {"medray": [], "plain": [], "plain autotune off": []}
    with tempfile.TemporaryDirectory() as tmp:
        write_demo_dataset(Path(tmp) / "data", train=args.images, val=256, test=3, size=args.size, seed=0)
        config = validate_config({
            "data": {"path": str(Path(tmp) / "data" / "parquet"), "augment": {"flip": False, "rotation_degrees": 0},
                     "shuffle": args.shuffle},
            "model": {"input_size": args.size},
            "train": {"epochs": args.epochs, "batch_size": args.batch, "class_balance": "none", "early_stopping_patience": 0,
                      "lr_plateau_patience": 0},
            "scaling": {"num_workers": 1, "cpus_per_worker": 1, "cpus_for_data": 1},
            "output": {"dir": str(Path(tmp) / "results")},
        })
        train_rows, val_rows = decoded_rows(config, "train"), decoded_rows(config, "val")
        task = prepare_job(config).task
        for round_index in range(args.rounds):
            run_dir = Path(tmp) / f"round-{round_index}"
            sides = [("medray", lambda: medray_epoch_rates(config, run_dir / "medray")),
                     ("plain", lambda: plain_keras_epoch_rates(config, task, train_rows, val_rows,
                                                                 run_dir / "plain", autotune=True)),
                     ("plain autotune off", lambda: plain_keras_epoch_rates(config, task, train_rows, val_rows,
                                                                              run_dir / "plain-no-autotune",
                                                                              autotune=False))]
            for name, measure in sides if round_index % 2 == 0 else sides[::-1]:
                rates = measure()
                rates_of[name].extend(rates)
                print(f"round {round_index + 1} {name:18s} epochs 2-{args.epochs}: "
                      + "  ".join(f"{rate:.0f}" for rate in rates) + " images/s", flush=True)
    print(f"\nimages {args.images} at {args.size}x{args.size}, batch {args.batch}, {args.rounds} alternating rounds, "
          f"epochs 2-{args.epochs} of every round timed (train + validation + checkpoint), "
          f"medray's data.shuffle {args.shuffle}")
    print("                                                            median epoch    all timed epochs "
          "(train images / seconds)")
    names = {"medray": "medray (Ray Train, 1 worker, Ray Data):",
             "plain": "plain Keras fit + val + ModelCheckpoint, tf.data:",
             "plain autotune off": "the same, tf.data's autotuner off:"}
    for name, rates in rates_of.items():
        print(f"{names[name]:<59} {statistics.median(rates):8.1f} images/s  {overall(rates):8.1f} images/s")
    medray = rates_of["medray"]
    for name in ("plain", "plain autotune off"):
        print(f"ratio medray / {name + ':':<19} {statistics.median(medray) / statistics.median(rates_of[name]):.2f} "
              f"by median epoch, {overall(medray) / overall(rates_of[name]):.2f} over all timed epochs  (goal >= 0.85 "
              "against the faster)")


def overall(rates: list[float]) -> float:
    """Images per second over all epochs together: every epoch had the same images."""
    return len(rates) / sum(1 / rate for rate in rates)


def decoded_rows(config, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A split decoded once by Ray Data (model input, one-hot labels) for the plain runs."""
    job = prepare_job(config).connect()
    rows = job.read_split(split).take_all()
    images = to_model_input(np.stack([row["pixels"] for row in rows]), job.backbone.model_input)
    labels = keras.utils.to_categorical([row["label"] for row in rows], len(job.source.class_names))
    return images, labels


class EpochEnds(UserCallback):
    """Runs in Ray Train's controller: appends the wall-clock time of each epoch's report (every
    worker's metrics in, the checkpoint persisted) to a file the driver reads."""

    def __init__(self, path: Path):
        self.path = str(path)

    def after_report(self, run_context, metrics, checkpoint) -> None:
        with open(self.path, "a") as ends:
            ends.write(f"{time.time()}\n")


def medray_epoch_rates(config, run_dir: Path) -> list[float]:
    job = prepare_job(config).connect()
    run_dir.mkdir(parents=True)
    ends_file = run_dir / "epoch-ends.txt"
    train_model(config, job.source, job.training_data(), job.image_size, run_dir, initial_model=None,
                task=job.task, callbacks=[EpochEnds(ends_file)])
    ends = [float(line) for line in ends_file.read_text().split()]
    return [job.source.num_rows("train") / (end - previous) for previous, end in zip(ends, ends[1:])]


def plain_keras_epoch_rates(config, task, train_rows: tuple[np.ndarray, np.ndarray], val_rows: tuple[np.ndarray, np.ndarray],
                            run_dir: Path, autotune: bool) -> list[float]:
    """`autotune` False: tf.data's autotuner off, as medray's own input pipeline runs (a
    tf.data.Options line): an iterator whose autotuner is on is destroyed only when the autotuner's
    thread next wakes, and Keras replaces the train and validation iterators every epoch."""
    import ray

    ray.shutdown()  # the plain run gets the whole machine, as it would outside Ray
    images, labels = train_rows
    batch = config.train.batch_size
    train = (tf.data.Dataset.from_tensor_slices(train_rows)
             .shuffle(len(images), seed=0, reshuffle_each_iteration=True)
             .batch(batch).prefetch(tf.data.AUTOTUNE))
    val = tf.data.Dataset.from_tensor_slices(val_rows).batch(batch).prefetch(tf.data.AUTOTUNE)
    if not autotune:
        options = tf.data.Options()
        options.autotune.enabled = False
        train, val = train.with_options(options), val.with_options(options)
    model = build_classifier(get_backbone(config.model.backbone), config.model.input_size, labels.shape[1],
                             config.model)
    # The loss and metrics medray's training loop compiles with: the same work per step.
    model.compile(optimizer=keras.optimizers.Adam(config.train.lr), loss=task.loss(config.train),
                  metrics=task.keras_metrics())
    run_dir.mkdir(parents=True)
    # Callbacks run in list order: an epoch ends after its checkpoint is written.
    ends: list[float] = []
    callbacks = [keras.callbacks.ModelCheckpoint(str(run_dir / "model.keras")),
                 keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: ends.append(time.perf_counter()))]
    model.fit(train, validation_data=val, epochs=config.train.epochs, verbose=0, callbacks=callbacks)
    return [len(images) / (end - previous) for previous, end in zip(ends, ends[1:])]


if __name__ == "__main__":
    main()
