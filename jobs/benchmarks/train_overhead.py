"""What Ray Train + Ray Data cost over plain Keras, for epochs of the same model and data.

medray: baseline_cnn through Ray Train with 1 worker, images decoded by Ray Data in the first epoch
and kept in the object store (data.cache: auto), reordered every epoch (data.shuffle, `full` by
default) and preprocessed as they stream. Plain: the same model and batch size with `model.fit` on an
in-memory tf.data pipeline of the already-decoded images, reshuffled every epoch as `model.fit`
shuffles arrays by default, with Ray shut down. Augmentation is off in both, so the work is the
same. Epochs after the first are timed in both (the first pays for tracing and start-up).

The two sides run in alternating rounds (medray first in odd rounds, plain first in even ones), so
that a busy spell of the machine hits both, and each side's median epoch and its rate over all
timed epochs are printed.

    python jobs/benchmarks/train_overhead.py [--images 4096] [--size 64] [--batch 64] [--epochs 6] [--rounds 3]
    python jobs/benchmarks/train_overhead.py --quick     # 1,024 images, 4 epochs, 2 rounds: under 5 minutes
    python jobs/benchmarks/train_overhead.py --quick --shuffle blocks
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

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
    medray_rates, plain_rates = [], []
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
        decoded = decoded_train_rows(config)
        for round_index in range(args.rounds):
            sides = [("medray", lambda: medray_epoch_rates(config, Path(tmp) / f"round-{round_index}")),
                     ("plain", lambda: plain_keras_epoch_rates(config, *decoded))]
            for name, measure in sides if round_index % 2 == 0 else sides[::-1]:
                rates = measure()
                (medray_rates if name == "medray" else plain_rates).extend(rates)
                print(f"round {round_index + 1} {name:6s} epochs 2-{args.epochs}: "
                      + "  ".join(f"{rate:.0f}" for rate in rates) + " images/s", flush=True)
    print(f"\nimages {args.images} at {args.size}x{args.size}, batch {args.batch}, {args.rounds} alternating rounds, "
          f"epochs 2-{args.epochs} of every round timed, medray's data.shuffle {args.shuffle}")
    print("                                            median epoch    all timed epochs (images / seconds)")
    for name, rates in (("medray (Ray Train, 1 worker, Ray Data):    ", medray_rates),
                        ("plain Keras model.fit on in-memory tf.data:", plain_rates)):
        print(f"{name} {statistics.median(rates):8.1f} images/s  {overall(rates):8.1f} images/s")
    print(f"ratio medray / plain: {statistics.median(medray_rates) / statistics.median(plain_rates):.2f} by median "
          f"epoch, {overall(medray_rates) / overall(plain_rates):.2f} over all timed epochs  (goal >= 0.85)")


def overall(rates: list[float]) -> float:
    """Images per second over all epochs together: every epoch had the same images."""
    return len(rates) / sum(1 / rate for rate in rates)


def decoded_train_rows(config) -> tuple[np.ndarray, np.ndarray]:
    """The train split decoded once by Ray Data (images, one-hot labels) for the plain runs."""
    job = prepare_job(config).connect()
    rows = job.read_split("train").take_all()
    images = to_model_input(np.stack([row["pixels"] for row in rows]), job.backbone.model_input)
    labels = keras.utils.to_categorical([row["label"] for row in rows], len(job.source.class_names))
    return images, labels


def medray_epoch_rates(config, run_dir: Path) -> list[float]:
    job = prepare_job(config).connect()
    run_dir.mkdir(parents=True)
    outcome = train_model(config, job.source, job.training_data(), job.image_size, run_dir, initial_model=None)
    return [epoch["images_per_second"] for epoch in outcome.history[1:]]


def plain_keras_epoch_rates(config, images: np.ndarray, labels: np.ndarray) -> list[float]:
    import ray

    ray.shutdown()  # the plain run gets the whole machine, as it would outside Ray
    dataset = (tf.data.Dataset.from_tensor_slices((images, labels))
               .shuffle(len(images), seed=0, reshuffle_each_iteration=True)
               .batch(config.train.batch_size).prefetch(2))
    model = build_classifier(get_backbone(config.model.backbone), config.model.input_size, labels.shape[1],
                             config.model)
    # The metrics medray's training loop compiles with (medray.train.loop.compile_for_phase).
    model.compile(optimizer=keras.optimizers.Adam(config.train.lr), loss="categorical_crossentropy",
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy"),
                           keras.metrics.AUC(multi_label=True, num_labels=labels.shape[1], name="auc")])
    # One fit for all epochs, as a plain Keras user runs it; an epoch is timed from the end of the one
    # before it, so the iterator Keras replaces between epochs is paid for as medray's is.
    ends: list[float] = []
    epoch_ends = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: ends.append(time.perf_counter()))
    model.fit(dataset, epochs=config.train.epochs, verbose=0, callbacks=[epoch_ends])
    return [len(images) / (end - previous) for previous, end in zip(ends, ends[1:])]


if __name__ == "__main__":
    main()
