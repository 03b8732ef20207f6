"""`medray data inspect` and the manifest: counts, duplicates, train/test leakage, --dedupe, reuse."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from medray.cli import main
from medray.config import DataConfig
from medray.data.manifest import prepare_source
from medray.data.sources import discover, guess_kind
from medray.errors import MedrayError

from conftest import PNEUMONIAMNIST, ROOT
from data_factory import hf_parquet, image_bytes, scan, write
from test_console import INTERNALS


@pytest.mark.skipif(not PNEUMONIAMNIST.is_file(), reason=f"PneumoniaMNIST not found at {PNEUMONIAMNIST}")
def test_inspect_prints_pneumoniamnist_class_counts_of_its_readme(tmp_path, capsys, ray_cluster):
    assert main(["data", "inspect", str(PNEUMONIAMNIST),  # the source kind is guessed: npz
                 "--set", "data.class_names=[normal,pneumonia]", "--out", str(tmp_path)]) == 0
    table = {line.split()[0]: line.split()[1:4] for line in capsys.readouterr().out.splitlines()
             if line.split()[:1] in (["train"], ["val"], ["test"])}
    assert table == {"train": ["4708", "1214", "3494"], "val": ["524", "135", "389"], "test": ["624", "234", "390"]}
    report = json.loads((tmp_path / "inspect.json").read_text())
    assert report["splits"]["train"]["imbalance_ratio"] == pytest.approx(3494 / 1214)
    assert report["sizes"] == {"28x28": 5856} and (tmp_path / "inspect.png").stat().st_size > 0


@pytest.fixture
def leaky_parquet(tmp_path):
    """train holds one copy of a test image and one image twice; val and test are clean."""
    train, val, test = ([scan(seed) for seed in range(start, start + 8)] for start in (0, 100, 200))
    train[3] = test[5]          # leakage: a test image also in train
    train[6] = train[1]         # a duplicate within train
    data = tmp_path / "data"
    for split, scans in (("train", train), ("val", val), ("test", test)):
        hf_parquet(data / f"{split}-00000-of-00001.parquet", [image_bytes(s) for s in scans], [0, 1] * 4,
                   ["normal", "pneumonia"])
    return data


def test_inspect_finds_the_cross_split_duplicate_and_dedupe_removes_it_from_train(leaky_parquet, tmp_path,
                                                                                 capsys, ray_cluster):
    out = tmp_path / "inspect"
    assert main(["data", "inspect", str(leaky_parquet), "--out", str(out), "--dedupe"]) == 0
    printed = capsys.readouterr().out
    assert "train-test 1" in printed and "dropped 1 duplicates, 1 leaked rows from train" in printed
    report = json.loads((out / "inspect.json").read_text())
    leak = report["duplicates_across_splits"]["train-test"]
    assert leak["images"] == 1 and sorted(leak["examples"][0]) == ["test-00000-of-00001.parquet#5",
                                                                     "train-00000-of-00001.parquet#3"]
    assert report["duplicates_within_splits"]["train"]["examples"] == [["train-00000-of-00001.parquet#1",
                                                                        "train-00000-of-00001.parquet#6"]]
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert manifest.set_index("row_id").loc[["train-00000-of-00001.parquet#3", "train-00000-of-00001.parquet#6"],
                                            "status"].tolist() == ["leak", "duplicate"]

    config = DataConfig(path=leaky_parquet, manifest=out / "manifest.parquet")
    source, data_report = prepare_source(discover(config), config, tmp_path / "run")
    assert source.num_rows("train") == 6 and source.num_rows("test") == 8
    assert data_report["rows_in"] == 24 and data_report["rows_reported"] == 2
    assert data_report["reported_by_reason"] == {"duplicate": 1, "leak": 1}


def test_a_run_reuses_its_manifest_and_refuses_one_for_other_data(leaky_parquet, tmp_path, ray_cluster):
    config = DataConfig(path=leaky_parquet)
    prepare_source(discover(config), config, tmp_path / "run")
    written = (tmp_path / "run" / "manifest.parquet").stat().st_mtime_ns
    source, _ = prepare_source(discover(config), config, tmp_path / "run")  # a resumed run
    assert (tmp_path / "run" / "manifest.parquet").stat().st_mtime_ns == written
    assert source.class_counts == {"train": [4, 4], "val": [4, 4], "test": [4, 4]}
    other = DataConfig(path=leaky_parquet, class_names=["a", "b"], manifest=tmp_path / "run" / "manifest.parquet")
    with pytest.raises(MedrayError, match="was written for other data settings"):
        prepare_source(discover(other), other, tmp_path / "run2")


def test_inspect_guesses_the_source_kind_from_what_the_path_holds(tmp_path):
    hf_parquet(tmp_path / "hf" / "data" / "train-00000-of-00001.parquet", [image_bytes(scan(0))], [0])
    np.savez(tmp_path / "mnist.npz", train_images=np.zeros((1, 8, 8), np.uint8))
    write(tmp_path / "scans" / "train" / "normal" / "a.png", image_bytes(scan(1)))
    write(tmp_path / "ct" / "normal" / "IM0001.dcm", b"")  # DICOM files are images of a folder tree
    assert guess_kind(tmp_path / "hf") == "parquet"
    assert guess_kind(tmp_path / "hf" / "data" / "train-00000-of-00001.parquet") == "parquet"
    assert guess_kind(tmp_path / "mnist.npz") == "npz"
    assert guess_kind(tmp_path / "scans") == "folders" and guess_kind(tmp_path / "ct") == "folders"


def test_inspect_of_a_path_without_a_dataset_says_what_it_looked_for(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    np.savez(tmp_path / "notes" / "mnist.npz", train_images=np.zeros((1, 8, 8), np.uint8))
    assert main(["data", "inspect", str(tmp_path / "notes")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"medray: error: {tmp_path / 'notes'} holds no .parquet files and no images")
    assert error.endswith(f"pass the file itself, e.g. {tmp_path / 'notes' / 'mnist.npz'}")


def test_inspect_on_a_terminal_prints_its_report_and_leaves_ray_to_the_log(leaky_parquet, tmp_path, ray_cluster):
    # As a person types it, in its own process (joining the session's cluster): the console
    # contract of `medray run` holds here too.
    out = tmp_path / "inspect"
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address}
    shown = subprocess.run([sys.executable, "-m", "medray", "data", "inspect", str(leaky_parquet), "--out", str(out)],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "train-test 1" in shown.stdout and f"wrote      {out / 'logs' / 'ray.log'}" in shown.stdout
    assert not [word for word in INTERNALS if word.lower() in (shown.stdout + shown.stderr).lower()], shown
    assert "Execution plan" in (out / "logs" / "ray.log").read_text()
