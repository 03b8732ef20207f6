"""Serving under load: latency and throughput of `medray serve` over HTTP on loopback, against the
same model in this process, one image at a time and batched.

    python jobs/benchmarks/serve_load.py --run results/tiny --requests 500 --concurrency 1 8 32

Every figure is measured in this run and printed; nothing is asserted. Steps:
  in-process  ServedModel.predict (the replica's own code: decode, preprocess, forward, and with
              explain the Grad-CAM backward pass and the overlay PNG) on --requests of the test
              split's images, one image per call and then --batch images per call; the ratio of
              the two rates is what batching can gain at most.
  serve       a local Ray cluster and Ray Serve with one replica of --cpus CPUs and
              threads_per_replica = --threads; a bounded load generator (a pool of --concurrency
              client threads, each sending its next request when the previous answer arrives)
              sends --requests POST /predict requests with the raw PNG body, with and without
              ?explain=gradcam; p50 / p95 / p99 latency (ms) and requests per second.
  unbatched   the same server restarted with max_batch_size 1, at the highest concurrency: the
              gain of `serve.batch` is the batched server's rate over this one.
The client threads run on the same machine as the server, so they take CPU from it: on a small
machine the figures are a floor of what a separate client would see.
"""

from __future__ import annotations

import argparse
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import requests
import yaml

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a finished run folder (its test split's images are sent)")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 8, 32])
    parser.add_argument("--batch", type=int, default=16, help="max_batch_size, and the in-process batch")
    parser.add_argument("--cpus", type=float, default=1.0, help="num_cpus of the replica")
    parser.add_argument("--threads", type=int, default=1, help="threads_per_replica")
    parser.add_argument("--skip-unbatched", action="store_true")
    args = parser.parse_args()
    images = split_images(Path(args.run), args.requests)
    print(f"model {args.run}, {len(set(images))} distinct test images, {args.requests} requests each measurement")
    in_process(args.run, images, args.batch)
    config = server_config(args.batch, args.cpus, args.threads)
    rates = serve_load(args.run, config, images, args.concurrency, explains=(False, True))
    if not args.skip_unbatched:
        top = max(args.concurrency)
        from ray import serve

        serve.shutdown()
        unbatched = serve_load(args.run, server_config(1, args.cpus, args.threads), images, [top],
                               explains=(False, True), label="unbatched")
        for explain in (False, True):
            print(f"serve.batch gain at concurrency {top}{' with explain' if explain else ''}: "
                  f"{rates[(top, explain)] / unbatched[(top, explain)]:.2f}x")


def split_images(run: Path, count: int) -> list[bytes]:
    """`count` PNGs of the run's test split (cycled), read from its data.path's parquet files."""
    from medray.config import load_config

    config = load_config(run / "config.yaml")
    pngs = []
    for file in sorted(Path(config.data.path).rglob("*test*.parquet")):
        pngs += [cell["bytes"] if isinstance(cell, dict) else cell
                 for cell in pq.read_table(file, columns=[config.data.image_column]).column(0).to_pylist()]
    return [pngs[index % len(pngs)] for index in range(count)]


def in_process(run: str, images: list[bytes], batch: int) -> None:
    from medray.serve.model import ServedModel
    from medray.serve.settings import validate_settings

    model = ServedModel(validate_settings({"model": run}))
    for explain in (False, True):
        method = "gradcam" if explain else None
        rates = {}
        for size in (1, batch):
            answer_batches(model, images[:2 * size], size, method)  # compile this batch shape first
            start = time.perf_counter()
            answer_batches(model, images, size, method)
            rates[size] = len(images) / (time.perf_counter() - start)
        print(f"in-process{' explain' if explain else '        '}  one at a time {rates[1]:8.1f} img/s   "
              f"batches of {batch} {rates[batch]:8.1f} img/s   gain {rates[batch] / rates[1]:.2f}x")


def answer_batches(model, images: list[bytes], size: int, method: str | None) -> None:
    """What a replica does per batch: decode, predict (and map), JSON-ready answers with overlays."""
    from medray.serve.app import describe_prediction

    for start in range(0, len(images), size):
        pixels = np.stack([model.decode(content, "benchmark") for content in images[start:start + size]])
        for image, prediction in zip(pixels, model.predict(pixels, method)):
            describe_prediction(model, prediction, image, method)


def server_config(batch: int, cpus: float, threads: int) -> dict:
    config = yaml.safe_load((ROOT / "configs" / "serve.yaml").read_text())
    application = config["applications"][0]
    application["args"].update({"max_batch_size": batch, "threads_per_replica": threads})
    application["deployments"][0]["ray_actor_options"]["num_cpus"] = cpus
    return config


def serve_load(run: str, config: dict, images: list[bytes], concurrencies: list[int], explains,
               label: str = "serve") -> dict:
    import tempfile

    from medray.serve.launch import start_server

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as file:
        yaml.safe_dump(config, file)
    os.environ.setdefault("MEDRAY_SERVE_TOKEN", "benchmark-token")
    started = start_server(run, file.name, port=free_port())
    batch = config["applications"][0]["args"]["max_batch_size"]
    rates = {}
    for explain in explains:
        for concurrency in concurrencies:
            load(started, images[:min(len(images), 4 * concurrency)], concurrency, explain)  # warm-up
            latencies, seconds = load(started, images, concurrency, explain)
            rates[(concurrency, explain)] = len(images) / seconds
            p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) * 1000
            print(f"{label:<9} max_batch_size {batch:>2} {'explain' if explain else 'predict':<7} concurrency "
                  f"{concurrency:>2}: p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  p99 {p99:7.1f} ms  "
                  f"{rates[(concurrency, explain)]:7.1f} req/s")
    return rates


def load(started, images: list[bytes], concurrency: int, explain: bool) -> tuple[np.ndarray, float]:
    """Every image sent once by `concurrency` client threads; (latencies in s, wall time in s)."""
    headers = {"Authorization": f"Bearer {started.token}"}
    params = {"explain": "gradcam"} if explain else {}
    sessions = {}

    def send(content: bytes) -> float:
        import threading

        session = sessions.setdefault(threading.get_ident(), requests.Session())
        sent = time.perf_counter()
        answer = session.post(f"{started.url}/predict", data=content, headers=headers, params=params, timeout=300)
        answer.raise_for_status()
        return time.perf_counter() - sent

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        latencies = np.asarray(list(pool.map(send, images)))
    return latencies, time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


if __name__ == "__main__":
    main()
