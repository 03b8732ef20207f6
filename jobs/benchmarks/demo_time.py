"""The demo as a ratio: `medray run --config configs/demo.yaml` against a plain Keras fit.

medray: the whole demo run as a user starts it (a fresh process: Ray start-up, the manifest's
decode pass, data-parallel training on 2 Ray Train workers, the test predictions, Grad-CAM for
every test image with its checks, the report), timed from outside. Plain: in this process, with
no Ray, the demo's model (same backbone, input size, batch size, epochs, learning rate) fitted
with `model.fit` on the same train images, decoded in advance, validating on the same val images
every epoch. The images are decoded before the plain clock starts; the decode is printed apart.
Augmentation (the demo's flip and rotation) is medray's work only.

Both sides run in the same invocation, alternating with --rounds 2 or more, so that a busy spell
of the shared machine hits both. The goal: medray's run at most 2.5 times the plain fit.

    python jobs/benchmarks/demo_time.py [--rounds 1] [--train 1200] [--epochs 8]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from medray.config import load_config
from medray.data.decode import decode_gray
from medray.data.synth import CLASS_NAMES, write_demo_dataset
from medray.keras_setup import keras
from medray.models.classifier import build_classifier
from medray.models.preprocessing import to_model_input
from medray.models.registry import get_backbone

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "configs" / "demo.yaml"
GOAL = 2.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1, help="runs of each side, alternating which goes first")
    parser.add_argument("--train", type=int, default=1200, help="train images (the demo's `medray data synth`)")
    parser.add_argument("--epochs", type=int, help="epochs on both sides (default: the demo config's)")
    args = parser.parse_args()
    config = load_config(DEMO)
    epochs = args.epochs or config.train.epochs
    medray_seconds, plain_seconds = [], []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "demo-data"
        write_demo_dataset(data, train=args.train, val=240, test=360, size=64, seed=0)
        started = time.perf_counter()
        train, val = decoded_split(data, "train", config), decoded_split(data, "val", config)
        print(f"plain: decoding {len(train[0]) + len(val[0])} images took {time.perf_counter() - started:.1f} s")
        for round_index in range(args.rounds):
            sides = [("medray", lambda: time_medray_run(data, Path(tmp) / f"results-{round_index}", epochs)),
                     ("plain", lambda: time_plain_fit(config, train, val, epochs))]
            for name, measure in sides if round_index % 2 == 0 else sides[::-1]:
                seconds = measure()
                (medray_seconds if name == "medray" else plain_seconds).append(seconds)
                print(f"round {round_index + 1} {name:6s} {seconds:7.1f} s", flush=True)
    medray_time, plain_time = statistics.median(medray_seconds), statistics.median(plain_seconds)
    print(f"\ndemo: {args.train} train images at 64x64, {epochs} epochs, {args.rounds} round(s)")
    print(f"medray run (training, evaluation, CAM for every test image, checks, report): {medray_time:7.1f} s")
    print(f"plain Keras model.fit of the same model on the same images:                 {plain_time:7.1f} s")
    print(f"ratio medray / plain: {medray_time / plain_time:.2f}  (goal <= {GOAL})")


def time_medray_run(data: Path, results: Path, epochs: int) -> float:
    command = [sys.executable, "-m", "medray", "run", "--config", str(DEMO),
               "--set", f"data.path={data / 'parquet'}", "--set", f"output.dir={results}",
               "--set", f"train.epochs={epochs}"]
    started = time.perf_counter()
    finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if finished.returncode != 0:
        sys.exit(f"medray run failed:\n{finished.stdout[-2000:]}{finished.stderr[-2000:]}")
    return seconds


def decoded_split(data: Path, split: str, config) -> tuple[np.ndarray, np.ndarray]:
    """A split's images as the model's input (float32) and one-hot labels, decoded with medray's decoder."""
    table = pq.read_table(next((data / "parquet").glob(f"{split}-*.parquet")))
    size = config.model.input_size
    pixels = np.stack([decode_gray(image["bytes"], size, config.data.max_image_pixels, split)
                       for image in table.column("image").to_pylist()])
    labels = np.asarray(table.column("label").to_pylist())
    images = to_model_input(pixels, get_backbone(config.model.backbone).model_input)
    return images, keras.utils.to_categorical(labels, len(CLASS_NAMES))


def time_plain_fit(config, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                   epochs: int) -> float:
    images, labels = train
    started = time.perf_counter()
    model = build_classifier(get_backbone(config.model.backbone), config.model.input_size, labels.shape[1],
                             config.model)
    # The metrics medray's training loop compiles with (medray.train.loop.compile_for_phase).
    model.compile(optimizer=keras.optimizers.Adam(config.train.lr), loss="categorical_crossentropy",
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy"),
                           keras.metrics.AUC(multi_label=True, num_labels=labels.shape[1], name="auc")])
    model.fit(images, labels, batch_size=config.train.batch_size, epochs=epochs, validation_data=val,
              shuffle=True, verbose=0)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
