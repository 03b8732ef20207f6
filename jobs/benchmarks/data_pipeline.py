"""Decode + preprocess + augment: medray's Ray Data pipeline against a two-process Pillow pool.

Writes `--rows` generated 128x128 PNG phantoms (Hugging Face style parquet: image {bytes, path},
label), then times passes over the training rows each way, in one run:
  medray: `training_data` as it builds the rows for the trainer, with `data.shuffle` as the user
          gets it (`full`, the default: Ray Data's random_shuffle every epoch), iterated with
          iter_batches in the driver and thrown away; epochs after the first are timed (the first
          starts Ray Data's workers and their imports). Also, to price the shuffle, the pipeline
          without it (read_split -> augment_and_prepare), and with --blocks `data.shuffle: blocks`.
  Pillow pool (the reference): what a competent user writes in an afternoon for 2 CPUs, a
          concurrent.futures process pool of --processes workers (2, as many as Ray Data gets) over
          the same parquet rows in batches of 256: per image PIL decode, convert("L"), resize, the
          same flip/rotation/shift/zoom (one PIL affine transform) and brightness/contrast, stacked
          and given the backbone's own preprocessing, each batch returned to the parent in order,
          as a training loop would read it. The pool is started and warmed before it is timed (as
          medray's first epoch is left out); its rows are not shuffled.
It also samples the driver's resident memory while medray streams `--small-rows` and `--rows`
rows (`full` shuffle). On a machine shared with other work each side is timed --rounds times and
its best pass counts, which discounts load that comes and goes; compare only within one run.

    python jobs/benchmarks/data_pipeline.py [--rows 10000] [--small-rows 2000] [--input-size 128] [--rounds 2]
    ray job submit --working-dir . -- python jobs/benchmarks/data_pipeline.py   # joins RAY_ADDRESS

The data goes to --out (default: a temporary folder, deleted after), which every node of a cluster
must see; a set already written there for the same row count is reused.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import multiprocessing
import os
import shutil
import tempfile
import threading
import time
from itertools import repeat
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
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--small-rows", type=int, default=2_000)
    parser.add_argument("--input-size", type=int, default=PNG_SIZE, help="model input side (resize target)")
    parser.add_argument("--rounds", type=int, default=2, help="timed passes each way; the best counts")
    parser.add_argument("--processes", type=int, default=2, help="Pillow pool processes")
    parser.add_argument("--blocks", action="store_true", help='also time data.shuffle "blocks"')
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
        for shuffle in ("full", "none", "blocks") if args.blocks else ("full", "none"):
            rates[shuffle], growths[shuffle] = medray_epoch(large, args.rounds, shuffle)
        large_growth = growths["full"]
        pillow_rate = pillow_pool(large_dir / "train-00000-of-00001.parquet", args.input_size, large,
                                  args.processes, args.rounds)
    import ray

    cpus = ray.cluster_resources().get("CPU", 0)
    print(f"\n{args.rows} rows, {PNG_SIZE}x{PNG_SIZE} PNG -> {args.input_size}x{args.input_size} model input, "
          f"augment {AUGMENT}; Ray cluster CPUs: {cpus:g}, machine load average {os.getloadavg()[0]:.1f}; "
          f"best of {args.rounds} passes each")
    pool_name = f"Pillow pool ({args.processes} processes, reference):"
    print(f"{pool_name:<41} {pillow_rate:8.0f} images/s")
    for shuffle, rate in rates.items():
        print(f"medray, {SHUFFLE_NAMES[shuffle]:<33} {rate:8.0f} images/s  ratio to the pool {rate / pillow_rate:.2f}"
              f"  ({rate / rates['none']:.2f} of unshuffled)")
    print("goal: ratio to the pool >= 1.0 on 2 cores with data.shuffle full, the default")
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


SHUFFLE_NAMES = {"none": "without shuffling:", "blocks": 'data.shuffle "blocks" + buffer:',
                 "full": 'data.shuffle "full" (the default):'}


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


def pillow_pool(parquet_file: Path, input_size: int, config, processes: int, rounds: int) -> float:
    """Images/s of the best of `rounds` passes over the rows through a pool of `processes` workers;
    the parent reads the PNG bytes and draws each row's augmentation, the workers do the rest."""
    settings = config.data.augment
    model_input = get_backbone(config.model.backbone).model_input
    # spawn: the parent has Ray's and Arrow's threads running, which fork does not copy safely
    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(abs, range(processes * 4)))  # start the workers before the clock does
        rates = []
        for _ in range(rounds):
            rng = np.random.default_rng(0)
            batches = ((table.column("image").field("bytes").to_pylist(), rng.random(table.num_rows))
                       for table in pq.ParquetFile(parquet_file).iter_batches(batch_size=BATCH, columns=["image"]))
            started, count = time.perf_counter(), 0
            for batch in pool.map(pillow_batch, batches, repeat(input_size), repeat(settings), repeat(model_input)):
                count += len(batch)
            rates.append(count / (time.perf_counter() - started))
            print(f"Pillow pool ({processes} processes): {count} rows at {rates[-1]:.0f} images/s", flush=True)
    return max(rates)


def pillow_batch(item: tuple[list[bytes], np.ndarray], input_size: int, settings, model_input) -> np.ndarray:
    """One batch, decoded and augmented one image at a time with Pillow, as the model's input."""
    blobs, row_seeds = item
    transforms = draw_transforms(row_seeds, input_size, settings)
    inverse = inverse_affine(transforms, input_size, input_size)
    batch = []
    for index, blob in enumerate(blobs):
        image = Image.open(io.BytesIO(blob)).convert("L").resize((input_size, input_size), Image.BILINEAR)
        moved = image.transform(image.size, Image.AFFINE, tuple(inverse[index, :6]), resample=Image.BILINEAR)
        pixels = adjust_intensity(np.asarray(moved, np.float32)[np.newaxis],
                                  transforms.brightness[index:index + 1], transforms.contrast[index:index + 1])
        batch.append(pixels[0])
    return to_model_input(np.stack(batch), model_input)


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
