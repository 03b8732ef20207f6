"""Decode + preprocess + augment: medray's Ray Data pipeline against a plain single-process Pillow loop.

Writes `--rows` generated 128x128 PNG phantoms (Hugging Face style parquet: image {bytes, path},
label), then times one pass over the training rows each way:
  medray: `training_data` as it builds the rows for the trainer, iterated with iter_batches and
          thrown away; epochs after the first are timed (the first starts Ray Data's workers and
          their imports). Once for each way of shuffling the rows every epoch (data.shuffle: "full",
          and "blocks" with the training worker's shuffle buffer), and once without shuffling
          (read_split -> augment_and_prepare, the pipeline before shuffling), which prices each.
  Pillow: a notebook's loop over the same parquet rows: PIL decode, convert("L"), resize, the same
          flip/rotation/shift/zoom (one PIL affine transform) and brightness/contrast per image,
          stacked into batches and given the backbone's own preprocessing.
It also samples the driver's resident memory while medray streams `--small-rows` and `--rows`
rows: streamed, the growth must not scale with the rows. On a machine shared with other work each
side is timed --rounds times and its best round counts, which discounts load that comes and goes.

    python jobs/benchmarks/data_pipeline.py [--rows 20000] [--small-rows 2000] [--input-size 128] [--rounds 2]
    ray job submit --working-dir . -- python jobs/benchmarks/data_pipeline.py   # joins RAY_ADDRESS

The data goes to --out (default: a temporary folder, deleted after), which every node of a cluster
must see; a set already written there for the same row count is reused.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from ray.data.expressions import random

from medray.cluster import connect
from medray.config import validate_config
from medray.data.augment import adjust_intensity, draw_transforms, inverse_affine
from medray.data.phantoms import make_phantoms
from medray.data.augment import SEED_COLUMN
from medray.data.pipeline import augment_and_prepare
from medray.data.synth import IMAGE_STRUCT, ROW_GROUP_ROWS, encode_png
from medray.job import prepare_job
from medray.models.preprocessing import to_model_input
from medray.models.registry import get_backbone

PNG_SIZE = 128
# Distinct phantoms drawn; rows reuse them shifted and mirrored (drawing 20,000 would take minutes).
PHANTOM_POOL = 400
BATCH = 256
AUGMENT = {"flip": True, "rotation_degrees": 10, "shift_fraction": 0.1, "zoom_fraction": 0.1,
           "brightness": 0.1, "contrast": 0.1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--small-rows", type=int, default=2_000)
    parser.add_argument("--input-size", type=int, default=PNG_SIZE, help="model input side (resize target)")
    parser.add_argument("--rounds", type=int, default=2, help="timed passes each way; the best counts")
    parser.add_argument("--out", type=Path, default=None, help="keep the parquet here (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        started = time.perf_counter()
        large_dir, small_dir = (write_parquet(root / f"phantoms-{rows}", rows, seed=0)
                                for rows in (args.rows, args.small_rows))
        print(f"{args.rows} + {args.small_rows} PNGs of {PNG_SIZE}x{PNG_SIZE} in parquet "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
        large, small = (config_for(directory, args.input_size) for directory in (large_dir, small_dir))
        connect(large.scaling)
        small_rate, small_growth = medray_epoch(small, rounds=1)
        rates, growths = {}, {}
        for shuffle in SHUFFLES:
            rates[shuffle], growths[shuffle] = medray_epoch(large, args.rounds, shuffle)
        large_growth = growths["full"]
        pillow_rate = max(pillow_loop(large_dir / "train-00000-of-00001.parquet", args.input_size, large)
                          for _ in range(args.rounds))
    import ray

    cpus = ray.cluster_resources().get("CPU", 0)
    print(f"\n{args.rows} rows, {PNG_SIZE}x{PNG_SIZE} PNG -> {args.input_size}x{args.input_size} model input, "
          f"augment {AUGMENT}; Ray cluster CPUs: {cpus:g}, machine load average {os.getloadavg()[0]:.1f}")
    print(f"plain Pillow loop (1 process):  {pillow_rate:8.0f} images/s")
    for shuffle, rate in rates.items():
        print(f"medray, {SHUFFLE_NAMES[shuffle]:<32} {rate:8.0f} images/s  ratio to Pillow {rate / pillow_rate:.2f}"
              f"  ({rate / rates['none']:.2f} of unshuffled)")
    print("goal: ratio to Pillow >= 1.5 on 2 cores with data.shuffle full, the default")
    print(f"driver peak RSS growth while streaming: {small_growth / 2**20:.0f} MiB for {args.small_rows} rows, "
          f"{large_growth / 2**20:.0f} MiB for {args.rows} rows ({small_rate:.0f} images/s on the small set)")


def write_parquet(directory: Path, rows: int, seed: int) -> Path:
    """train (`rows` PNGs), val and test (8 each, medray wants every split) in Hugging Face layout;
    written to a staging folder renamed at the end, so an existing folder is a complete set."""
    if directory.is_dir():
        return directory
    images, _, labels = make_phantoms(PHANTOM_POOL, PNG_SIZE, seed)
    rng = np.random.default_rng(seed)
    staging = directory.with_name(f".{directory.name}.incomplete-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for split, count in (("train", rows), ("val", 8), ("test", 8)):
        schema = pa.schema([("image", IMAGE_STRUCT), ("label", pa.int64())])
        with pq.ParquetWriter(staging / f"{split}-00000-of-00001.parquet", schema) as writer:
            for start in range(0, count, ROW_GROUP_ROWS):
                cells, group_labels = [], []
                for index in range(start, min(start + ROW_GROUP_ROWS, count)):
                    pool_index = index % PHANTOM_POOL
                    # Every row a different PNG: the pool's phantoms moved by a few pixels, some mirrored.
                    pixels = np.roll(images[pool_index], tuple(rng.integers(-6, 7, 2)), axis=(0, 1))
                    pixels = pixels[:, ::-1] if rng.random() < 0.5 else pixels
                    cells.append({"bytes": encode_png(np.ascontiguousarray(pixels)), "path": f"{split}_{index:05d}.png"})
                    group_labels.append(int(labels[pool_index]))
                writer.write_table(pa.table({"image": cells, "label": group_labels}, schema=schema))
    os.replace(staging, directory)
    return directory


def config_for(path: Path, input_size: int):
    return validate_config({
        # Every pass decodes: this measures the streaming pipeline, not the cache of decoded rows.
        "data": {"path": str(path), "augment": AUGMENT, "cache": "never"},
        "model": {"backbone": "baseline_cnn", "input_size": input_size},
        # Only for the CPU check in connect(): nothing trains here, Ray Data gets every CPU.
        "scaling": {"num_workers": 1, "cpus_per_worker": 0.5, "cpus_for_data": 1},
        "output": {"dir": str(path.parent / "results")},
    })


SHUFFLES = ("none", "blocks", "full")
SHUFFLE_NAMES = {"none": "without shuffling:", "blocks": 'data.shuffle "blocks" + buffer:',
                 "full": 'data.shuffle "full" (random_shuffle):'}


def medray_epoch(config, rounds: int, shuffle: str = "full") -> tuple[float, int]:
    """Images/s of the best pass after the first over the train rows, and the driver's peak RSS
    growth over all passes. `shuffle`: data.shuffle, or "none" for the pipeline without it."""
    if shuffle != "none":
        config = config.model_copy(update={"data": config.data.model_copy(update={"shuffle": shuffle})})
    job = prepare_job(config)
    buffer = {}
    if shuffle == "none":
        train = job.read_split("train").with_column(SEED_COLUMN, random(seed=config.seed)).map_batches(
            augment_and_prepare, fn_kwargs={"model_input": job.backbone.model_input, "augment": config.data.augment})
        rows = job.source.num_rows("train")
    else:
        data = job.training_data()
        train, rows = data.train, data.train_rows
        # as a training worker reads them (medray.train.worker_data)
        buffer = {"local_shuffle_buffer_size": config.data.shuffle_buffer_rows} if shuffle == "blocks" else {}
    train.context.execution_options.preserve_order = True  # as Ray Train's ingest runs it
    rates = []
    with PeakRss() as memory:
        for epoch in range(1 + rounds):
            started, count = time.perf_counter(), 0
            for batch in train.iter_batches(batch_size=BATCH, batch_format="numpy", **buffer):
                count += len(batch["label"])
            seconds = time.perf_counter() - started
            assert count == rows, (count, rows)
            print(f"medray ({shuffle}) epoch {epoch + 1}: {count} rows in {seconds:.1f} s", flush=True)
            rates.append(count / seconds)
    return max(rates[1:]), memory.growth


def pillow_loop(parquet_file: Path, input_size: int, config) -> float:
    """The same rows, decoded and augmented one image at a time in this process."""
    settings = config.data.augment
    backbone = get_backbone(config.model.backbone)
    rng = np.random.default_rng(0)
    started, count = time.perf_counter(), 0
    for table in pq.ParquetFile(parquet_file).iter_batches(batch_size=BATCH, columns=["image", "label"]):
        blobs = table.column("image").field("bytes").to_pylist()
        transforms = draw_transforms(rng.random(len(blobs)), input_size, settings)
        inverse = inverse_affine(transforms, input_size, input_size)
        batch = []
        for index, blob in enumerate(blobs):
            image = Image.open(io.BytesIO(blob)).convert("L").resize((input_size, input_size), Image.BILINEAR)
            moved = image.transform(image.size, Image.AFFINE, tuple(inverse[index, :6]), resample=Image.BILINEAR)
            pixels = adjust_intensity(np.asarray(moved, np.float32)[np.newaxis],
                                      transforms.brightness[index:index + 1], transforms.contrast[index:index + 1])
            batch.append(pixels[0])
        to_model_input(np.stack(batch), backbone.model_input)
        count += len(batch)
    rate = count / (time.perf_counter() - started)
    print(f"Pillow loop: {count} rows at {rate:.0f} images/s", flush=True)
    return rate


class PeakRss:
    """The driver's resident memory sampled every 20 ms in a thread: the peak above the start."""

    def __enter__(self) -> PeakRss:
        self._start = self.peak = _rss()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._done.wait(0.02):
            self.peak = max(self.peak, _rss())

    @property
    def growth(self) -> int:
        return self.peak - self._start


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


if __name__ == "__main__":
    main()
