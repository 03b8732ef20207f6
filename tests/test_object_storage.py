"""Data read from, and runs written to, an S3 bucket on a real S3-compatible server (moto, over HTTP).

Every source kind reads the same rows from the bucket as from the local copy; bad URIs stop
`medray run` before Ray Train with one line naming the URI; a run to the bucket writes every
output there, `_SUCCESS` last, and `medray explain --run s3://...` explains it in place.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pandas as pd
import pytest

from medray.cli import main
from medray.config import DataConfig
from medray.data.pipeline import read_split
from medray.data.sources import discover
from medray.run_folder import SUCCESS, finished
from medray.storage import s3_filesystem

from conftest import cli_args, tiny_overrides
from test_dicom import write_dicom
from test_npz_source import medmnist_arrays, write_npz


def rows_by_id(data_config: DataConfig) -> dict:
    source = discover(data_config)
    rows = read_split(source, "test", 16, data_config).take_all()
    return {row["row_id"]: (int(row["label"]), row["pixels"]) for row in rows}


def assert_same_rows(local: DataConfig, remote: DataConfig) -> None:
    here, there = rows_by_id(local), rows_by_id(remote)
    assert here and sorted(here) == sorted(there)
    for row_id, (label, pixels) in here.items():
        assert there[row_id][0] == label and np.array_equal(there[row_id][1], pixels), row_id


def test_parquet_and_folders_read_from_the_bucket_match_the_local_copy(ray_cluster, object_store, tiny_dataset):
    for kind in ("parquet", "folders"):
        uri = object_store.upload(tiny_dataset / kind, "round-trip", kind)
        assert_same_rows(DataConfig(path=tiny_dataset / kind, source=kind), DataConfig(path=uri, source=kind))


def test_parquet_glob_in_the_bucket_finds_the_split_files(object_store, tiny_dataset):
    object_store.upload(tiny_dataset / "parquet", "glob", "parquet")
    source = discover(DataConfig(path=object_store.uri("glob", "parquet", "*.parquet")))
    assert source.path == object_store.uri("glob", "parquet")
    assert {split: source.num_rows(split) for split in source.pieces} == {"train": 60, "val": 20, "test": 24}


def test_npz_read_from_the_bucket_matches_the_local_copy(ray_cluster, object_store, tmp_path):
    local = write_npz(tmp_path / "tiny.npz", **medmnist_arrays(rows=6, size=16))
    uri = object_store.upload(local, "round-trip", "tiny.npz")
    assert_same_rows(DataConfig(path=local, source="npz"), DataConfig(path=uri, source="npz"))


def test_dicom_folders_read_from_the_bucket_match_the_local_copy(ray_cluster, object_store, tmp_path):
    rng = np.random.default_rng(1)
    for split in ("train", "val", "test"):
        for label in ("normal", "tumour"):
            for index in range(2):
                folder = tmp_path / "dicom" / split / label
                folder.mkdir(parents=True, exist_ok=True)
                write_dicom(folder / f"scan{index}.dcm", rng.integers(0, 4000, (16, 16)))
    uri = object_store.upload(tmp_path / "dicom", "round-trip", "dicom")
    assert_same_rows(DataConfig(path=tmp_path / "dicom", source="folders"), DataConfig(path=uri, source="folders"))


def run_and_fail(capsys, tmp_path, data_path: str, output_dir: str | None = None) -> str:
    """`medray run` that must stop with exit code 2 and one error line; returns that line."""
    assert main(cli_args(tiny_overrides(data_path, output_dir or tmp_path / "out"))) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("medray: error: "), error
    return error[0]


@pytest.mark.parametrize("breakage, uri_parts, expected", [
    ("endpoint", ("demo", "parquet"), r"AWS_ENDPOINT_URL"),
    ("secret", ("demo", "parquet"), r"AWS_SECRET_ACCESS_KEY"),
    ("bucket", ("demo", "parquet"), r"bucket no-such-bucket does not exist"),
    ("prefix", ("nothing-here", "parquet"), r"does not exist; upload the dataset there"),
])
def test_bad_object_storage_stops_the_run_naming_the_uri(breakage, uri_parts, expected, object_store, capsys,
                                                         tmp_path, monkeypatch):
    uri = object_store.uri(*uri_parts)
    if breakage == "endpoint":
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{_closed_port()}")
    elif breakage == "secret":
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    elif breakage == "bucket":
        uri = uri.replace(object_store.bucket, "no-such-bucket")
    line = run_and_fail(capsys, tmp_path, uri)
    assert uri in line and re.search(expected, line), line


def test_unknown_scheme_is_named_with_what_to_use(capsys, tmp_path):
    line = run_and_fail(capsys, tmp_path, "nosuchfs://bucket/data")
    assert "data.path nosuchfs://bucket/data" in line and "s3://bucket/prefix" in line


def test_output_dir_in_a_missing_bucket_stops_before_training(object_store, tiny_dataset, capsys, tmp_path):
    line = run_and_fail(capsys, tmp_path, str(tiny_dataset / "parquet"), "s3://no-such-bucket/results")
    assert "s3://no-such-bucket/results" in line and "bucket" in line


def test_run_from_and_to_the_bucket_writes_every_output_there_success_last(ray_cluster, object_store,
                                                                           tiny_dataset, capsys):
    data = object_store.upload(tiny_dataset / "parquet", "demo", "parquet")
    overrides = [*tiny_overrides(data, object_store.uri("results")), "output.run_id=to-bucket",
                 "train.epochs=1", "explain.checks=false", "explain.gallery_size=2"]
    assert main(cli_args(overrides)) == 0
    summary = capsys.readouterr().out
    run = object_store.uri("results", "to-bucket")
    assert f"results    {run}" in summary
    keys = object_store.listing("results", "to-bucket")
    print("bucket listing:", *keys, sep="\n  ")
    for key in ("config.yaml", "manifest.parquet", "data.json", "history.csv", "model.keras", "metrics.json",
                "predictions.parquet", "summary.txt", "report.html", "explain/maps/part-000000.parquet", SUCCESS):
        assert key in keys, key
    assert any(key.startswith("checkpoints/train/") and key.endswith("model.keras") for key in keys)
    assert len([key for key in keys if key.startswith("explain/overlays/")]) == 24
    assert finished(run)

    # explain in place: the run folder in the bucket is read, its explain/ written back
    explain = ["explain", "--config", cli_args([])[2], "--run", run, "--set", f"data.path={data}",
               *sum((["--set", item] for item in ("model.input_size=32", "explain.batch_size=16",
                                                   "explain.method=hirescam", "explain.checks=false")), [])]
    assert main(explain) == 0
    assert "explained 24 test images" in capsys.readouterr().out
    maps = pd.read_parquet(f"{object_store.bucket}/results/to-bucket/explain/maps",
                           filesystem=s3_filesystem())
    assert set(maps["method"]) == {"hirescam"} and maps["row_id"].nunique() == 24


def _closed_port() -> int:
    from object_store import free_port

    return free_port()  # nothing listens there once the probe socket is closed


def test_storage_settings_reach_ray_workers(ray_cluster, object_store):
    @ray_cluster.remote
    def endpoint_seen_by_a_worker():
        return os.environ.get("AWS_ENDPOINT_URL_S3")

    assert ray_cluster.get(endpoint_seen_by_a_worker.remote()) == object_store.endpoint


def test_mlflow_file_store_in_a_bucket_is_refused_naming_tracking_uri(capsys, tmp_path):
    overrides = [*tiny_overrides("unused", "s3://bucket/results"), "tracking.enabled=true"]
    assert main(cli_args(overrides)) == 2
    error = capsys.readouterr().err
    assert "tracking.uri" in error and "s3://bucket/results" in error
