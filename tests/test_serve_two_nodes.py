"""`medray serve` on a real two-node Ray cluster (loopback, token auth on) with the run's model in the
loopback S3 bucket: the nodes know no storage credentials, the serving driver's runtime env brings
them to the replicas, one replica on each node."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys

import numpy as np
import pandas as pd

from medray.serve.launch import Started

from conftest import ROOT
from object_store import free_port
from ray_nodes import RAY
from serving import post, serve_config, split_images

REPLICA_CLASS = "ServeReplica:medray:MedrayModel"


def test_a_run_in_the_bucket_is_served_with_a_replica_on_each_node(two_nodes, object_store, finished_run,
                                                                    tiny_dataset, tmp_path):
    location = object_store.upload(finished_run, "served-runs", "two-nodes")
    config = serve_config(tmp_path / "serve.yaml", deployment={"num_replicas": 2, "max_replicas_per_node": 1})
    port, token = free_port(), secrets.token_urlsafe(16)
    # as a person runs it against the cluster: RAY_ADDRESS, the cluster's token, the bucket's credentials
    env = {**two_nodes.env, **object_store.env, "RAY_ADDRESS": two_nodes.gcs, "MEDRAY_SERVE_TOKEN": token}
    started = subprocess.run([sys.executable, "-m", "medray", "serve", location, "--config", str(config),
                              "--port", str(port), "--detach"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert started.returncode == 0, started.stdout + started.stderr[-3000:]
    assert f"endpoint  http://127.0.0.1:{port}/predict" in started.stdout

    listed = subprocess.run([RAY, "list", "actors", "--address", two_nodes.address, "--filter",
                             f"class_name={REPLICA_CLASS}", "--filter", "state=ALIVE", "--format", "json",
                             "--detail"], env=two_nodes.env, capture_output=True, text=True, timeout=120)
    replicas = json.loads(listed.stdout)
    # Both replicas loaded the model from the bucket (a replica is alive once its constructor ran),
    # one on each node.
    assert len(replicas) == 2 and len({replica["node_id"] for replica in replicas}) == 2, listed.stdout

    served = Started(f"http://127.0.0.1:{port}", token)
    predictions = pd.read_parquet(finished_run / "predictions.parquet").head(8)
    images = split_images(tiny_dataset / "parquet")
    for row_id, probabilities, prediction in zip(predictions["row_id"], predictions["probabilities"],
                                                 predictions["prediction"]):
        answer = post(served, "/predict", data=images[row_id], explain="gradcam")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert np.allclose(list(body["probabilities"].values()), probabilities, atol=1e-5), row_id
        assert list(body["probabilities"]).index(body["prediction"]) == prediction
        assert body["run_id"] == "two-nodes" and len(body["explanation"]["maps"]) == 1
    assert post(served, "/predict", data=images[row_id], token="not-the-token").status_code == 401
