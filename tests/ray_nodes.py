"""A real two-node Ray cluster on loopback (token auth on) for the tests: a head and one more node,
each started with `ray start` in its own process group, so that a test can lose a node at once."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from object_store import free_port

RAY = str(Path(sys.executable).with_name("ray"))


@dataclass
class TwoNodes:
    address: str
    env: dict
    worker: subprocess.Popen
    join: list[str]  # `ray start` arguments of the second node

    @property
    def gcs(self) -> str:
        """The head's GCS address (host:port): RAY_ADDRESS for a driver joining the cluster."""
        return self.join[0].split("=", 1)[1]

    def restart_worker(self) -> None:
        """The lost node comes back (new ports: the old ones may linger in TIME_WAIT)."""
        self.worker = start_node(worker_args(self.join), self.env)
        wait_for_nodes(self.gcs, self.env, 2)


def wait_for_job_server(address: str, env: dict, seconds: int = 120) -> None:
    deadline = time.time() + seconds
    while subprocess.run([RAY, "job", "list", "--address", address], env=env, capture_output=True).returncode:
        if time.time() > deadline:
            pytest.fail(f"no job server at {address} after {seconds} s")
        time.sleep(2)


def start_node(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([RAY, "start", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=2",
                             "--disable-usage-stats", *args,
                             # each node its own ports: the session's Ray instance holds the defaults
                             f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                             f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def alive_nodes(gcs: str, env: dict) -> int:
    status = subprocess.run([RAY, "status", f"--address={gcs}"], env=env, capture_output=True, text=True)
    active = status.stdout.split("Active:")[-1].split("Pending:")[0]
    return len(re.findall(r"\bnode_[0-9a-f]+", active))


def worker_args(join: list[str]) -> list[str]:
    return [*join, f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}"]


def wait_for_nodes(gcs: str, env: dict, count: int, seconds: int = 600) -> None:
    deadline = time.time() + seconds
    while alive_nodes(gcs, env) < count:
        if time.time() > deadline:
            pytest.fail(f"fewer than {count} nodes joined")
        time.sleep(2)


def lose_node(node: subprocess.Popen) -> None:
    """Kill the node's processes at once, as a lost VM: SIGKILL to its whole process group (the
    `ray start` session started for it and nothing else); workers die with their raylet."""
    os.killpg(node.pid, signal.SIGKILL)
    node.wait(timeout=60)


def start_two_nodes(tmp_path_factory):
    """A head and one more node, 2 CPUs each. The nodes know no storage credentials: jobs bring them."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    env.pop("RAY_ADDRESS", None)
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    port, dashboard = free_port(), free_port()
    head = start_node(["--head", f"--port={port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                       f"--temp-dir={tmp_path_factory.mktemp('ray-head')}"], env)
    cluster = None
    try:
        wait_for_job_server(f"http://127.0.0.1:{dashboard}", env)
        join = [f"--address=127.0.0.1:{port}", f"--temp-dir={tmp_path_factory.mktemp('ray-worker')}"]
        cluster = TwoNodes(f"http://127.0.0.1:{dashboard}", env, start_node(worker_args(join), env), join)
        wait_for_nodes(f"127.0.0.1:{port}", env, 2)
        yield cluster
    finally:
        # Each node's processes form one process group (start_new_session): killing it ends the node
        # at once, where `ray stop`'s graceful shutdown took half a minute.
        for process in (cluster.worker if cluster else None, head):
            if process is not None and process.poll() is None:
                lose_node(process)
