"""`ray job submit` against a real head on loopback, with token authentication on."""

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, tiny_overrides
from test_console import EPOCH_LINE, INTERNALS

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A token-authenticated head started with `ray start --head --block`, killed afterwards."""
    token = secrets.token_hex(16)
    temp_dir = tmp_path_factory.mktemp("ray-head")
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    env.pop("RAY_ADDRESS", None)
    dashboard = free_port()
    process = subprocess.Popen(
        [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={free_port()}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--temp-dir={temp_dir}",
         # The test session's own Ray instance already holds the default agent and metrics ports.
         f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
         f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
         "--num-cpus=2", "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        wait_for_job_server(address, env)
        yield address, env
    finally:
        process.terminate()  # --block: stopping it stops this head's processes, no others
        process.wait(timeout=60)


def wait_for_job_server(address: str, env: dict, seconds: int = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if subprocess.run([RAY, "job", "list", "--address", address], env=env,
                          capture_output=True).returncode == 0:
            return
        time.sleep(2)
    raise TimeoutError(f"no job server at {address} after {seconds} s")


def submit(command: list[str], env: dict, seconds: int = 300) -> subprocess.CompletedProcess:
    """Submit, retrying while the head's job agent is still starting (the job server answers
    `ray job list` a little before it can accept jobs)."""
    deadline = time.time() + seconds
    while True:
        submitted = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        if "No available agent" not in submitted.stdout + submitted.stderr or time.time() > deadline:
            return submitted
        time.sleep(3)


def test_client_without_the_token_is_refused(head, tmp_path):
    address, env = head
    stranger = {**env, "HOME": str(tmp_path)}  # no ~/.ray/auth_token there
    stranger.pop("RAY_AUTH_TOKEN")
    refused = subprocess.run([RAY, "job", "list", "--address", address], env=stranger,
                             capture_output=True, text=True)
    assert refused.returncode != 0
    assert "authentication token" in (refused.stdout + refused.stderr).lower()


def test_demo_job_submitted_to_the_head_succeeds_and_writes_results(head, tiny_dataset, tmp_path):
    address, env = head
    out = tmp_path / "results"
    command = [RAY, "job", "submit", "--address", address, "--working-dir", ".", "--",
               "python", "jobs/run.py", "--config", "configs/demo.yaml"]
    for override in [*tiny_overrides(tiny_dataset / "parquet", out), "output.run_id=submitted"]:
        command += ["--set", override]
    submitted = submit(command, env)
    log = submitted.stdout + submitted.stderr
    assert submitted.returncode == 0, log[-3000:]
    assert "succeeded" in log.lower()
    # `ray job logs` shows the console a terminal shows: one line per epoch, no Ray or TensorFlow internals
    assert [int(epoch) for epoch in EPOCH_LINE.findall(submitted.stdout)] == [1, 2]
    assert not [word for word in INTERNALS if word.lower() in submitted.stdout.lower()], submitted.stdout[-3000:]
    run_dir = out / "submitted"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["rows"] == 24
    assert (run_dir / "model.keras").is_file() and list((run_dir / "explain" / "maps").glob("*.parquet"))
    assert len(list((run_dir / "explain" / "overlays" / "gradcam").rglob("*.png"))) == 24
