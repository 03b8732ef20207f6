"""medray on a real two-node Ray cluster (both nodes on loopback, token auth on), data and results in
an S3 bucket, credentials only in the job's runtime env, and the non-head node lost mid-training.

One test does it all, because starting the nodes and the jobs is the slow part: a client without the
token is refused; the demo job is submitted with `medray submit`, trains one Ray Train worker on
each node, loses the second node after the first epoch's checkpoint is in the bucket, resumes from
that checkpoint on the head and writes every output to the bucket, while its console shows
medray's lines only; then the node comes back and a 2-trial `medray tune` and, through plain
`ray job submit`, `medray explain` (on the same run folder) run as further jobs.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from io import BytesIO

import pandas as pd
import pytest

from medray import storage
from medray.run_folder import SUCCESS

from conftest import ROOT, tiny_overrides
from ray_nodes import RAY, TwoNodes, lose_node
from test_console import INTERNALS

# Enough epochs that the node is lost mid-training, not after it (about 2-3 s each here).
EPOCHS = 12


class Job:
    """`medray submit` (or plain `ray job submit --working-dir .`) of a job whose runtime env carries
    the storage credentials; its output is collected while it runs (a full pipe would stall the client)."""

    def __init__(self, cluster: TwoNodes, store, job: list[str], plain: bool = False):
        submit = ([RAY, "job", "submit", "--working-dir", "."] if plain else
                  [sys.executable, "-m", "medray", "submit"])
        command = [*submit, "--address", cluster.address,
                   "--runtime-env-json", json.dumps({"env_vars": store.env}), "--", "python", *job]
        self.process = subprocess.Popen(command, cwd=ROOT, env=cluster.env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True)
        self.reader.start()

    def running(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return "".join(self.lines)

    def wait(self, seconds: int = 900) -> tuple[int, str]:
        self.process.wait(timeout=seconds)
        self.reader.join(timeout=60)
        return self.process.returncode, self.log()


def checkpoints_in_bucket(store, *run: str) -> int:
    return sum(bool(re.match(r"checkpoints/train/checkpoint_[^/]+/state\.json$", key)) for key in store.listing(*run))


def test_demo_job_on_two_nodes_survives_losing_one_and_writes_everything_to_the_bucket(
        two_nodes, object_store, tiny_dataset, tmp_path):
    stranger = {**two_nodes.env, "HOME": str(tmp_path)}  # no ~/.ray/auth_token there
    stranger.pop("RAY_AUTH_TOKEN")
    refused = subprocess.run([RAY, "job", "list", "--address", two_nodes.address], env=stranger,
                             capture_output=True, text=True)
    assert refused.returncode != 0 and "authentication token" in (refused.stdout + refused.stderr).lower()

    data = object_store.upload(tiny_dataset / "parquet", "cluster", "parquet")
    run = ("cluster", "results", "two-nodes")
    overrides = [*tiny_overrides(data, object_store.uri(*run[:2])), "output.run_id=two-nodes",
                 f"train.epochs={EPOCHS}", "train.early_stopping_patience=0", "scaling.placement_strategy=SPREAD",
                 "explain.checks=false", "explain.gallery_size=2"]
    job = Job(two_nodes, object_store, ["jobs/run.py", "--config", "configs/demo.yaml",
                                        *sum((["--set", item] for item in overrides), [])])
    deadline = time.time() + 900
    # Two checkpoints: a worker writes epoch 2's only after Ray Train took epoch 1's report, so the
    # restart after the loss has a registered checkpoint to resume from (one file alone raced it).
    while checkpoints_in_bucket(object_store, *run) < 2:
        assert job.running(), job.log()[-3000:]
        if time.time() > deadline:
            pytest.fail("no checkpoint reached the bucket")
        time.sleep(0.5)
    lose_node(two_nodes.worker)
    code, log = job.wait()
    assert code == 0, log[-4000:]
    assert re.search(r"job package \S+ is 0\.\d MiB", log)
    # The job's console is medray's: every epoch's line (an epoch in flight when the node was lost
    # may print twice), no Ray or TensorFlow internals, even about the lost node.
    epochs = [int(epoch) for epoch in re.findall(rf"^epoch (\d+)/{EPOCHS}  loss ", log, re.MULTILINE)]
    assert sorted(set(epochs)) == list(range(1, EPOCHS + 1)), log[-4000:]
    assert not [word for word in INTERNALS if word.lower() in log.lower()], log[-4000:]

    # What the workers printed is in the run's log (the console shows medray's own lines only).
    worker_log = storage.read_bytes(object_store.uri(*run, "logs", "ray.log")).decode(errors="replace")
    placed = re.findall(r"worker (\d)/2 on node ([0-9a-f]+)", worker_log)
    resumed = re.search(r"resuming after epoch (\d+) from (\S+)", worker_log)
    print("workers placed:", placed, "\n", resumed.group(0) if resumed else "no resume line")
    assert len({node for _, node in placed[:2]}) == 2, placed  # one worker on each node at first
    assert resumed and int(resumed.group(1)) >= 1
    assert resumed.group(2).startswith(f"{object_store.bucket}/{'/'.join(run)}/checkpoints")

    keys = object_store.listing(*run)
    print("bucket listing:", *[key for key in keys if "/overlays/" not in key], sep="\n  ")
    for key in ("model.keras", "metrics.json", "report.html", "explain/maps/part-000000.parquet", SUCCESS):
        assert key in keys, key
    history = pd.read_csv(BytesIO(storage.read_bytes(object_store.uri(*run, "history.csv"))))
    # Every epoch trained exactly once: the resumed run continued after its checkpoint's epoch.
    assert history["epoch"].tolist() == list(range(1, EPOCHS + 1))

    # The node comes back; a 2-trial sweep and the explain job run on both nodes, all in the bucket.
    two_nodes.restart_worker()
    sweep = Job(two_nodes, object_store, [
        "jobs/tune.py", "--config", "configs/demo_sweep.yaml",
        *sum((["--set", item] for item in (
            "name=two-node-sweep", "num_samples=2", "asha.enabled=false", "set.train.epochs=1",
            "set.model.input_size=32", f"set.data.path={data}", f"set.output.dir={object_store.uri(*run[:2])}")),
            [])])
    code, log = sweep.wait()
    assert code == 0, log[-4000:]
    sweep_keys = object_store.listing(*run[:2], "two-node-sweep")
    print("sweep in the bucket:", *[key for key in sweep_keys if "/checkpoint_" not in key], sep="\n  ")
    assert len({key.split("/")[0] for key in sweep_keys if key.endswith("/params.json")}) == 2
    for key in ("sweep.yaml", "leaderboard.csv", "best/model.keras", "report.html", SUCCESS):
        assert key in sweep_keys, key

    for trial in {key.split("/")[0] for key in sweep_keys if key.endswith("/params.json")}:
        for name in ("config.yaml", "outcome.json", "result.json"):
            assert f"{trial}/{name}" in sweep_keys
        assert any(key.startswith(f"{trial}/checkpoints/train/checkpoint_") for key in sweep_keys)

    explain = Job(two_nodes, object_store, [
        "jobs/explain.py", "--config", "configs/demo.yaml", "--run", object_store.uri(*run),
        *sum((["--set", item] for item in (f"data.path={data}", "model.input_size=32", "explain.batch_size=16",
                                            "explain.method=hirescam", "explain.checks=false")), [])], plain=True)
    code, log = explain.wait()
    assert code == 0, log[-4000:]
    assert "succeeded" in log.lower() and "explained 24 test images" in log
    assert not [word for word in INTERNALS if word.lower() in log.lower()], log[-4000:]
    summary = storage.read_bytes(object_store.uri(*run, "explain", "summary.txt")).decode()
    assert "hirescam" in summary
