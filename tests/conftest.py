"""Shared fixtures: one tiny phantom dataset and one local Ray cluster per test session.

The cluster is started by `medray.cluster.connect` with the demo config's scaling settings,
exactly as `medray run --config configs/demo.yaml` starts it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from medray.config import load_config

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "configs" / "demo.yaml"
MULTILABEL_CONFIG = ROOT / "configs" / "demo_multilabel.yaml"
PNEUMONIAMNIST = ROOT.parent / "shared" / "datasets" / "pneumoniamnist" / "pneumoniamnist.npz"


def tiny_overrides(data_path: Path, output_dir: Path) -> list[str]:
    """The demo config shrunk to seconds: 32 px images, 2 epochs, same scaling as the demo."""
    return [f"data.path={data_path}", f"output.dir={output_dir}", "model.input_size=32",
            "train.epochs=2", "train.batch_size=16", "explain.batch_size=16"]


def cli_args(overrides: list[str]) -> list[str]:
    """`medray run` on the demo config with these overrides, as the CLI receives it."""
    args = ["run", "--config", str(DEMO_CONFIG)]
    for override in overrides:
        args += ["--set", override]
    return args


@pytest.fixture(scope="session")
def finished_run(tiny_dataset, tmp_path_factory, ray_cluster) -> Path:
    """One full run of the demo config on the tiny dataset, shared by every test that reads outputs
    (MLflow tracking on, so that test_tracking needs no run of its own).

    Run as a person runs it, `python -m medray run ...` in its own process (joining the session's
    cluster), so that its console is exactly what a terminal shows; kept in `<run>/console.txt`.
    """
    out = tmp_path_factory.mktemp("results")
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address}
    finished = subprocess.run(
        [sys.executable, "-m", "medray", *cli_args([*tiny_overrides(tiny_dataset / "parquet", out),
                                                    "output.run_id=tiny", "tracking.enabled=true"])],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1200)
    assert finished.returncode == 0, finished.stdout[-3000:]
    (out / "tiny" / "console.txt").write_text(finished.stdout)
    return out / "tiny"


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    from medray.data.synth import write_demo_dataset

    root = tmp_path_factory.mktemp("phantoms") / "demo"
    write_demo_dataset(root, train=60, val=20, test=24, size=32, seed=3)
    return root


@pytest.fixture(scope="session")
def object_store():
    """A loopback S3 server and bucket (tests/object_store.py), its credentials in AWS_* for the session."""
    import os

    from object_store import start_object_store

    server, store = start_object_store()
    saved = {name: os.environ.get(name) for name in store.env}
    os.environ.update(store.env)
    yield store
    for name, value in saved.items():
        os.environ.pop(name) if value is None else os.environ.__setitem__(name, value)
    server.stop()


@pytest.fixture(scope="session")
def ray_cluster(object_store):
    """Started after the object store, so that its Ray workers get the AWS_* settings, as a
    cluster's workers get them from the job's runtime environment."""
    import ray

    from medray.cluster import connect

    connect(load_config(DEMO_CONFIG).scaling)
    yield ray
    ray.shutdown()


@pytest.fixture
def two_nodes(tmp_path_factory):
    """A two-node Ray cluster on loopback with token auth (tests/ray_nodes.py), for one test."""
    from ray_nodes import start_two_nodes

    yield from start_two_nodes(tmp_path_factory)


@pytest.fixture(scope="session")
def multilabel_run(tmp_path_factory, ray_cluster) -> Path:
    """`medray run` on the multi-label demo config, shrunk to 32 px phantoms and 2 epochs."""
    from medray.data.synth import write_multilabel_dataset

    data = tmp_path_factory.mktemp("multilabel") / "phantoms"
    write_multilabel_dataset(data, train=64, val=24, test=24, size=32, seed=5)
    out = tmp_path_factory.mktemp("results")
    overrides = [f"data.path={data / 'parquet'}", f"output.dir={out}", "output.run_id=multi", "model.input_size=32",
                 "train.epochs=2", "train.batch_size=16", "explain.batch_size=16", "explain.check_sample=16",
                 "explain.label_randomisation_epochs=1"]
    args = [sys.executable, "-m", "medray", "run", "--config", str(MULTILABEL_CONFIG)]
    for override in overrides:
        args += ["--set", override]
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address}
    finished = subprocess.run(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=1200)
    assert finished.returncode == 0, finished.stdout[-3000:]
    (out / "multi" / "console.txt").write_text(finished.stdout)
    return out / "multi"
