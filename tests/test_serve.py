"""`medray serve`: Ray Serve started for real on the session's cluster, spoken to over HTTP on
loopback; the answers are compared with the batch job's predictions.parquet and maps of the
session's tiny run."""

from __future__ import annotations

import base64
import io
import socket

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
from test_dicom import RAMP, write_dicom

# The half step of float16 in [0.5, 1): maps.parquet stores maps as float16.
FLOAT16_HALF_STEP = 2.0**-12
TIMEOUT = 120


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def served(finished_run, ray_cluster, tmp_path_factory):
    """The session run served with configs/serve.yaml (a quarter CPU per replica here, and a pixel
    limit the 32 px test images pass), its generated token captured as it is announced."""
    from ray import serve

    from medray.serve.launch import start_server

    config = yaml.safe_load((ROOT / "configs" / "serve.yaml").read_text())
    config["applications"][0]["deployments"][0]["ray_actor_options"]["num_cpus"] = 0.25
    path = tmp_path_factory.mktemp("serve") / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    announced = []
    started = start_server(str(finished_run), path, ["max_image_pixels=4096", "max_body_bytes=200000"],
                           host="127.0.0.1", port=free_port(), announce=announced.append)
    assert announced == [started.token]
    yield started
    serve.shutdown()


def post(served, path: str, data=None, files=None, token: str | None = "session", **params) -> requests.Response:
    headers = {"Authorization": f"Bearer {served.token if token == 'session' else token}"} if token else {}
    return requests.post(f"{served.url}{path}", data=data, files=files, params=params, headers=headers,
                         timeout=TIMEOUT)


def split_images(tiny_dataset) -> dict[str, bytes]:
    """The test split's PNG bytes by the row ids the batch job gave them (`<file>#<row>`)."""
    root = tiny_dataset / "parquet"
    images = {}
    for file in sorted(root.rglob("*.parquet")):
        column = pq.read_table(file).column("image").to_pylist()
        name = file.relative_to(root).as_posix()
        images.update({f"{name}#{row}": (cell["bytes"] if isinstance(cell, dict) else cell)
                       for row, cell in enumerate(column)})
    return images


def test_served_probabilities_and_maps_equal_the_batch_jobs(served, finished_run, tiny_dataset):
    predictions = pd.read_parquet(finished_run / "predictions.parquet").set_index("row_id")
    maps = pq.read_table(finished_run / "explain" / "maps").to_pandas().set_index("row_id")
    images = split_images(tiny_dataset)
    for row_id, recorded in predictions.iterrows():
        answer = post(served, "/predict", data=images[row_id], explain="gradcam")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        served_probabilities = np.asarray(list(body["probabilities"].values()))
        assert np.allclose(served_probabilities, recorded["probabilities"], atol=1e-5), row_id
        classes = list(body["probabilities"])
        assert classes.index(body["prediction"]) == recorded["prediction"]
        [served_map] = body["explanation"]["maps"]
        stored = maps.loc[row_id]
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
    images = split_images(tiny_dataset)
    row_ids = predictions["row_id"].tolist()[:8]
    answer = post(served, "/predict/batch", files=[("files", (f"{n}.png", images[row_id], "image/png"))
                                                   for n, row_id in enumerate(row_ids)])
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert len(results) == len(row_ids)
    for result, recorded in zip(results, predictions["probabilities"].tolist()[:8]):
        assert np.allclose(list(result["probabilities"].values()), recorded, atol=1e-5)


def test_a_multipart_upload_is_answered_like_the_raw_body(served, tiny_dataset):
    image = next(iter(split_images(tiny_dataset).values()))
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
    assert requests.get(f"{served.url}/healthz", timeout=TIMEOUT).json() == {"status": "ok"}


@pytest.mark.parametrize("token, expected", [(None, "missing bearer token"), ("not-the-token", "wrong bearer token")])
def test_a_request_without_the_right_token_is_refused(served, tiny_dataset, token, expected):
    image = next(iter(split_images(tiny_dataset).values()))
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
    image = next(iter(split_images(tiny_dataset).values()))
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
    config = yaml.safe_load((ROOT / "configs" / "serve.yaml").read_text())
    config["applications"][0].update({"name": "medray-s3", "route_prefix": "/s3"})
    config["applications"][0]["deployments"][0]["ray_actor_options"]["num_cpus"] = 0.25
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(config))
    host, port = served.url.removeprefix("http://").split(":")
    from_bucket = start_server(location, tmp_path / "serve.yaml", host=host, port=int(port), announce=lambda token: None)
    try:
        image = next(iter(split_images(tiny_dataset).values()))
        local = post(served, "/predict", data=image, explain="gradcam").json()
        remote = requests.post(f"{from_bucket.url}/predict", data=image, params={"explain": "gradcam"},
                               headers={"Authorization": f"Bearer {from_bucket.token}"}, timeout=TIMEOUT)
        assert remote.status_code == 200, remote.text
        assert remote.json() == local
    finally:
        serve.delete("medray-s3")


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
