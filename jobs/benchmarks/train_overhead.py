"""What Ray Train + Ray Data cost over plain Keras, for one epoch of the same model and data.

medray: baseline_cnn through Ray Train with 1 worker, images decoded and preprocessed by Ray Data
as they stream. Plain: the same model and batch size with `model.fit` on an in-memory tf.data
pipeline of the already-decoded images. Augmentation is off in both, so the work is the same.
The second epoch is timed in both (the first pays for tracing and start-up).

    python jobs/benchmarks/train_overhead.py [--images 4096] [--size 64] [--batch 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from medray.cluster import connect
from medray.config import validate_config
from medray.data.pipeline import read_split, training_data
from medray.data.preprocess import to_model_input
from medray.data.sources import discover
from medray.data.synth import write_demo_dataset
from medray.keras_setup import keras, tf
from medray.models.classifier import build_classifier
from medray.models.registry import get_backbone
from medray.train.trainer import train_model

EPOCHS = 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        write_demo_dataset(Path(tmp) / "data", train=args.images, val=256, test=3, size=args.size, seed=0)
        config = validate_config({
            "data": {"path": str(Path(tmp) / "data" / "parquet"), "augment": {"flip": False, "rotation_degrees": 0}},
            "model": {"input_size": args.size},
            "train": {"epochs": EPOCHS, "batch_size": args.batch, "class_balance": "none", "early_stopping_patience": 0,
                      "lr_plateau_patience": 0},
            "scaling": {"num_workers": 1, "cpus_per_worker": 1, "cpus_for_data": 1},
            "output": {"dir": str(Path(tmp) / "results")},
        })
        medray_rate = medray_images_per_second(config, Path(tmp))
        plain_rate = plain_keras_images_per_second(config)
    print(f"images {args.images} at {args.size}x{args.size}, batch {args.batch}, epoch {EPOCHS} timed")
    print(f"medray (Ray Train, 1 worker, Ray Data streaming): {medray_rate:8.1f} images/s")
    print(f"plain Keras model.fit on in-memory tf.data:       {plain_rate:8.1f} images/s")
    print(f"ratio medray / plain: {medray_rate / plain_rate:.2f}  (goal >= 0.85)")


def medray_images_per_second(config, tmp: Path) -> float:
    connect(config.scaling)
    source = discover(config.data)
    backbone = get_backbone(config.model.backbone)
    data = training_data(source, backbone, config.model.input_size, config)
    run_dir = tmp / "results" / "benchmark"
    run_dir.mkdir(parents=True)
    outcome = train_model(config, source, data, config.model.input_size, run_dir, initial_model=None)
    return outcome.history[-1]["images_per_second"]


def plain_keras_images_per_second(config) -> float:
    import ray

    source = discover(config.data)
    backbone = get_backbone(config.model.backbone)
    rows = read_split(source, "train", config.model.input_size, config.data).take_all()  # decoded once, up front
    ray.shutdown()  # the plain run gets the whole machine, as it would outside Ray
    images = to_model_input(np.stack([row["pixels"] for row in rows]), backbone)
    labels = keras.utils.to_categorical([row["label"] for row in rows], len(source.class_names))
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(config.train.batch_size).prefetch(2)
    model = build_classifier(backbone, config.model.input_size, len(source.class_names), config.model)
    # The metrics medray's training loop compiles with (medray.train.loop.compile_for_phase).
    model.compile(optimizer=keras.optimizers.Adam(config.train.lr), loss="categorical_crossentropy",
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy"),
                           keras.metrics.AUC(multi_label=True, num_labels=len(source.class_names), name="auc")])
    model.fit(dataset, epochs=1, verbose=0)
    started = time.perf_counter()
    model.fit(dataset, epochs=1, verbose=0)
    return len(images) / (time.perf_counter() - started)


if __name__ == "__main__":
    main()
