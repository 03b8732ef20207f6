"""`medray serve`: Ray Serve started for real on the session's cluster, spoken to over HTTP on
loopback; the answers are compared with the batch job's predictions.parquet and maps of the
session's tiny run."""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import requests
import yaml
from PIL import Image

from medray.explain.overlay import resize_map

from conftest import ROOT
from data_factory import image_bytes
from object_store import free_port
from serving import TIMEOUT, post, serve_config, split_images
from test_dicom import RAMP, write_dicom

# The half step of float16 in [0.5, 1): maps.parquet stores maps as float16.
FLOAT16_HALF_STEP = 2.0**-12


@pytest.fixture(scope="module")
def served(finished_run, multilabel_run, ray_cluster, tmp_path_factory):
    """The session run served with configs/serve.yaml (a quarter CPU per replica here, and a pixel
    limit the 32 px test images pass), its generated token captured as it is announced.

    After the multi-label run exists: its training takes every CPU of the session's cluster, and a
    replica's quarter CPU would leave Ray Data less than the one CPU it waits for (for ever)."""
    from ray import serve

    from medray.serve.launch import start_server

    path = serve_config(tmp_path_factory.mktemp("serve") / "serve.yaml")
    announced = []
    started = start_server(str(finished_run), path, ["max_image_pixels=4096", "max_body_bytes=200000"],
                           host="127.0.0.1", port=free_port(), announce=announced.append)
    assert announced == [started.token]
    yield started
    serve.shutdown()


def test_served_probabilities_and_maps_equal_the_batch_jobs(served, finished_run, tiny_dataset):
    predictions = pd.read_parquet(finished_run / "predictions.parquet").set_index("row_id")
    maps = pq.read_table(finished_run / "explain" / "maps").to_pandas().set_index("row_id")
    images = split_images(tiny_dataset / "parquet")
    for row_id, recorded in predictions.iterrows():
        answer = post(served, "/predict", data=images[row_id], explain="gradcam")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        served_probabilities = np.asarray(list(body["probabilities"].values()))
        assert np.allclose(served_probabilities, recorded["probabilities"], atol=1e-5), row_id
        # The run's temperature scaling (fitted on val) reaches the answer as in predictions.parquet.
        assert list(body["calibrated_probabilities"]) == list(body["probabilities"])
        assert np.allclose(list(body["calibrated_probabilities"].values()), recorded["calibrated_probabilities"],
                           atol=1e-5), row_id
        classes = list(body["probabilities"])
        assert classes.index(body["prediction"]) == recorded["prediction"]
        [served_map] = body["explanation"]["maps"]
        stored = maps.loc[row_id]
        assert served_map["target"] == body["prediction"] == classes[stored["target"]]  # the predicted class's map
        assert served_map["cam_layer"] == stored["layer"]
        # the answer carries the map at the CAM layer's grid; the bulk job stores it at the scan's own
        # size, resized with the same function
        cam = np.asarray(served_map["map"], np.float32)
        assert list(cam.shape) == served_map["shape"]
        cam = resize_map(cam, stored["cam_height"], stored["cam_width"]).ravel()
        assert np.allclose(cam, stored["cam"].astype(np.float32), atol=FLOAT16_HALF_STEP + 1e-5, rtol=0), row_id
        with Image.open(io.BytesIO(base64.b64decode(served_map["overlay_png_base64"]))) as overlay:
            assert overlay.format == "PNG" and overlay.width >= 224


def test_a_batch_request_answers_each_image_as_one_request_does(served, finished_run, tiny_dataset):
    predictions = pd.read_parquet(finished_run / "predictions.parquet")
    images = split_images(tiny_dataset / "parquet")
    row_ids = predictions["row_id"].tolist()[:8]
    answer = post(served, "/predict/batch", files=[("files", (f"{n}.png", images[row_id], "image/png"))
                                                   for n, row_id in enumerate(row_ids)])
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert len(results) == len(row_ids)
    for result, recorded in zip(results, predictions["probabilities"].tolist()[:8]):
        assert np.allclose(list(result["probabilities"].values()), recorded, atol=1e-5)


def test_a_multipart_upload_is_answered_like_the_raw_body(served, tiny_dataset):
    image = next(iter(split_images(tiny_dataset / "parquet").values()))
    raw = post(served, "/predict", data=image).json()
    form = post(served, "/predict", files={"file": ("scan.png", image, "image/png")}).json()
    assert raw["probabilities"] == pytest.approx(form["probabilities"], abs=1e-6)
    assert raw["run_id"] == "tiny" and len(raw["model_version"]) == 16


def test_info_names_the_classes_input_and_methods_and_healthz_needs_no_token(served):
    info = requests.get(f"{served.url}/info", headers={"Authorization": f"Bearer {served.token}"}, timeout=TIMEOUT)
    assert info.status_code == 200
    facts = info.json()
    assert facts["classes"] == ["no_lesion", "bright_round_lesion", "dark_irregular_lesion"]
    assert facts["input_size"] == 32 and facts["methods"] == ["gradcam"] and facts["preprocessing"] == "baseline_cnn"
    assert facts["calibration"]["fitted_on"] == "val" and facts["calibration"]["temperatures"][0] > 0
    assert requests.get(f"{served.url}/healthz", timeout=TIMEOUT).json() == {"status": "ok"}


@pytest.mark.parametrize("token, expected", [(None, "missing bearer token"), ("not-the-token", "wrong bearer token")])
def test_a_request_without_the_right_token_is_refused(served, tiny_dataset, token, expected):
    image = next(iter(split_images(tiny_dataset / "parquet").values()))
    answer = post(served, "/predict", data=image, token=token)
    assert answer.status_code == 401 and expected in answer.json()["error"]
    info = requests.get(f"{served.url}/info", timeout=TIMEOUT)
    assert info.status_code == 401


def dicom_without_pixels(tmp_path) -> bytes:
    import pydicom

    data = write_dicom(tmp_path / "a.dcm", RAMP)
    dataset = pydicom.dcmread(io.BytesIO(data))
    del dataset.PixelData
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def multi_frame_of_the_wrong_size(tmp_path) -> bytes:
    """NumberOfFrames says 3, the pixel data holds one frame."""
    import pydicom

    dataset = pydicom.dcmread(io.BytesIO(write_dicom(tmp_path / "b.dcm", RAMP)))
    dataset.NumberOfFrames = 3
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def truncated_png() -> bytes:
    """Noise, so that the pixel data is most of the file and half the file ends inside it."""
    png = image_bytes(np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8))
    return png[:len(png) // 2]


BAD_INPUTS = {
    "not an image": (lambda tmp_path: b"these are not the pixels you are looking for", 400, "not an image"),
    "truncated PNG": (lambda tmp_path: truncated_png(), 400, "truncated"),
    "DICOM without pixels": (dicom_without_pixels, 400, "DICOM"),
    "multi-frame of the wrong size": (multi_frame_of_the_wrong_size, 400, "3 frames"),
    "decompression bomb": (lambda tmp_path: image_bytes(np.zeros((100, 100), np.uint8)), 413,
                           "over data.max_image_pixels=4096"),
    "body over the limit": (lambda tmp_path: b"\0" * 200_001, 413, "max_body_bytes=200000"),
    "empty body": (lambda tmp_path: b"", 400, "no body"),
}


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_a_bad_input_is_refused_with_a_json_error_naming_it(served, tmp_path, kind):
    make, status, words = BAD_INPUTS[kind]
    answer = post(served, "/predict", data=make(tmp_path), explain="gradcam")
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert words in error and "Traceback" not in error


def test_the_replica_keeps_serving_after_bad_requests(served, tmp_path, tiny_dataset):
    image = next(iter(split_images(tiny_dataset / "parquet").values()))
    before = post(served, "/predict", data=image).json()
    for make, _, _ in BAD_INPUTS.values():
        assert post(served, "/predict", data=make(tmp_path), explain="gradcam").status_code >= 400
    assert post(served, "/predict", data=image, explain="hirescam").status_code == 400
    after = post(served, "/predict", data=image)
    assert after.status_code == 200 and after.json() == before


def test_a_run_in_the_bucket_is_served_as_the_same_run_on_disk(served, finished_run, object_store, tiny_dataset,
                                                                tmp_path):
    """The replica reads the run from the loopback S3 bucket (credentials from the cluster's worker
    env), as a second application beside the local one."""
    from ray import serve

    from medray.serve.launch import start_server

    location = object_store.upload(finished_run, "served-runs", "tiny")
    config = serve_config(tmp_path / "serve.yaml", name="medray-s3", route_prefix="/s3")
    host, port = served.url.removeprefix("http://").split(":")
    from_bucket = start_server(location, config, host=host, port=int(port), announce=lambda token: None)
    try:
        image = next(iter(split_images(tiny_dataset / "parquet").values()))
        local = post(served, "/predict", data=image, explain="gradcam").json()
        remote = requests.post(f"{from_bucket.url}/predict", data=image, params={"explain": "gradcam"},
                               headers={"Authorization": f"Bearer {from_bucket.token}"}, timeout=TIMEOUT)
        assert remote.status_code == 200, remote.text
        assert remote.json() == local
    finally:
        serve.delete("medray-s3")


def serve_details(application: str) -> dict:
    """What Serve's controller holds of medray's deployment in `application`: its deployment_config
    and replicas (the same record `serve status` and the dashboard read)."""
    from ray.serve.context import _get_global_client

    return _get_global_client().get_serve_details()["applications"][application]["deployments"]["MedrayModel"]


def test_the_configs_replicas_and_cpus_reach_the_running_deployment(served):
    import ray
    from ray.util.state import list_actors

    config = yaml.safe_load((ROOT / "configs" / "serve.yaml").read_text())["applications"][0]["deployments"][0]
    running = serve_details("medray")
    assert running["deployment_config"]["num_replicas"] == config["num_replicas"]
    assert running["deployment_config"]["max_ongoing_requests"] == config["max_ongoing_requests"]
    assert running["deployment_config"]["ray_actor_options"]["num_cpus"] == 0.25
    assert [replica["state"] for replica in running["replicas"]] == ["RUNNING"] * config["num_replicas"]
    replicas = list_actors(filters=[("class_name", "=", "ServeReplica:medray:MedrayModel"), ("state", "=", "ALIVE")],
                           detail=True, address=ray.get_runtime_context().gcs_address)
    assert [actor.required_resources for actor in replicas] == [{"CPU": 0.25}] * config["num_replicas"]


def test_autoscaling_limits_from_the_config_bound_the_replicas_under_a_burst(served, finished_run, tiny_dataset,
                                                                             tmp_path):
    """min_replicas 1, max_replicas 2, one ongoing request per replica as the target: a steady burst
    of explain requests from 8 clients makes Serve start the second replica, and never a third."""
    import threading

    from ray import serve

    from medray.serve.launch import start_server

    autoscaling = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1,
                   "upscale_delay_s": 0, "downscale_delay_s": 600, "look_back_period_s": 2,
                   "metrics_interval_s": 1}  # Serve warns unless the look-back spans several reports
    config = serve_config(tmp_path / "serve.yaml", name="medray-auto", route_prefix="/auto",
                          deployment={"num_replicas": None, "autoscaling_config": autoscaling})
    host, port = served.url.removeprefix("http://").split(":")
    auto = start_server(str(finished_run), config, ["max_batch_size=1"], host=host, port=int(port),
                        announce=lambda token: None)
    try:
        running = serve_details("medray-auto")
        assert {key: running["deployment_config"]["autoscaling_config"][key] for key in autoscaling} == autoscaling
        assert len(running["replicas"]) == 1
        image = next(iter(split_images(tiny_dataset / "parquet").values()))
        stop, answers = threading.Event(), []

        def client():
            while not stop.is_set():
                answers.append(post(auto, "/predict", data=image, explain="gradcam").status_code)

        clients = [threading.Thread(target=client) for _ in range(8)]
        for thread in clients:
            thread.start()
        counts = []
        try:
            deadline = time.time() + 240
            while time.time() < deadline and (not counts or counts[-1] < 2):
                time.sleep(1)
                deployment = serve.status().applications["medray-auto"].deployments["MedrayModel"]
                counts.append(deployment.replica_states.get("RUNNING", 0))
        finally:
            stop.set()
            for thread in clients:
                thread.join(timeout=TIMEOUT)
        print(f"running replicas, once a second: {counts}; {len(answers)} answers")
        assert counts[-1] == 2 and max(counts) <= 2, counts
        assert set(answers) == {200}
    finally:
        serve.delete("medray-auto")


def test_a_multi_label_run_answers_per_label_as_the_batch_job(served, multilabel_run, tmp_path):
    """Probabilities per label, the labels over their validation thresholds, and the maps the batch
    job kept (each predicted label's and the top label's, each the logit of its label)."""
    from ray import serve

    from medray.config import load_config
    from medray.serve.launch import start_server

    config = serve_config(tmp_path / "serve.yaml", name="medray-multi", route_prefix="/multi")
    host, port = served.url.removeprefix("http://").split(":")
    multi = start_server(str(multilabel_run), config, host=host, port=int(port), announce=lambda token: None)
    try:
        info = requests.get(f"{multi.url}/info", headers={"Authorization": f"Bearer {multi.token}"},
                            timeout=TIMEOUT).json()
        thresholds = json.loads((multilabel_run / "thresholds.json").read_text())["thresholds"]
        assert info["task"] == "multi_label" and info["cam_target"] == "logit of label k"
        assert info["classes"] == ["bright_round_lesion", "dark_irregular_lesion"] and info["thresholds"] == thresholds
        predictions = pd.read_parquet(multilabel_run / "predictions.parquet").set_index("row_id")
        maps = pq.read_table(multilabel_run / "explain" / "maps").to_pandas()
        images = split_images(Path(load_config(multilabel_run / "config.yaml").data.path))
        labels = info["classes"]
        assert len(predictions) == 24 and 0 < sum(predictions["prediction"].map(sum)) < 48  # not all alike
        for row_id, recorded in predictions.iterrows():
            answer = post(multi, "/predict", data=images[row_id], explain="gradcam")
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert list(body["probabilities"]) == labels
            assert np.allclose(list(body["probabilities"].values()), recorded["probabilities"], atol=1e-5), row_id
            assert np.allclose(list(body["calibrated_probabilities"].values()), recorded["calibrated_probabilities"],
                               atol=1e-5), row_id  # one temperature per label
            assert body["prediction"] == [label for label, present in zip(labels, recorded["prediction"]) if present]
            stored = maps[maps["row_id"] == row_id].set_index("target")
            served_maps = {labels.index(item["target"]): item for item in body["explanation"]["maps"]}
            assert set(served_maps) == set(stored.index), row_id
            for target, item in served_maps.items():
                cam = resize_map(np.asarray(item["map"], np.float32), stored.loc[target, "cam_height"],
                                 stored.loc[target, "cam_width"]).ravel()
                assert np.allclose(cam, stored.loc[target, "cam"].astype(np.float32),
                                   atol=FLOAT16_HALF_STEP + 1e-5, rtol=0), (row_id, target)
    finally:
        serve.delete("medray-multi")


@pytest.mark.parametrize("arguments, words", [
    (["/nowhere/run"], "/nowhere/run/model.keras does not exist"),
    (["/nowhere/model.keras"], "set args.class_names"),
    (["/nowhere/run", "--set", "max_batch_sise=4"], "unknown key max_batch_sise"),
    (["/nowhere/run", "--set", "methods=[gradcam, lime]"], "methods.1='lime' is not allowed"),
])
def test_a_wrong_model_or_setting_stops_medray_serve_in_one_line_before_ray_starts(arguments, words, capsys):
    from medray.cli import main

    assert main(["serve", *arguments, "--config", str(ROOT / "configs" / "serve.yaml")]) == 2
    error = capsys.readouterr().err
    assert words in error and error.count("\n") == 1
