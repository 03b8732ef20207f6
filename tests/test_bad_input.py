"""Bad input stops the run with one line naming the file, row or key, and exit code 2."""

import shutil

import pyarrow as pa
import pyarrow.parquet as pq

from medray.cli import main

from conftest import cli_args, tiny_overrides
from data_factory import copy_with_broken_row


def run_cli(overrides: list[str]) -> int:
    return main(cli_args(overrides))


def one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("medray:")]
    assert len(lines) == 1, lines
    return lines[0]


def test_missing_data_path_stops_before_ray_with_the_path_named(tmp_path, capsys):
    # Where the demo's data would be: the line says how to make it.
    assert run_cli(tiny_overrides(tmp_path / "no-such-data" / "parquet", tmp_path / "out")) == 2
    line = one_error_line(capsys)
    assert "no-such-data/parquet does not exist" in line
    assert f"medray data synth --out {tmp_path / 'no-such-data'}`" in line
    assert not (tmp_path / "out").exists()
    # Anywhere else (a MedMNIST file, say), synthetic phantoms are no answer.
    assert run_cli([*tiny_overrides(tmp_path / "pneumoniamnist.npz", tmp_path / "out"), "data.source=npz"]) == 2
    line = one_error_line(capsys)
    assert "pneumoniamnist.npz does not exist" in line and "synth" not in line and "data.path" in line


def test_config_typo_stops_with_the_key_and_a_suggestion(tmp_path, capsys):
    assert run_cli([*tiny_overrides(tmp_path, tmp_path / "out"), "train.epohcs=3"]) == 2
    assert "unknown key train.epohcs (did you mean epochs?" in one_error_line(capsys)


def test_empty_split_stops_with_the_split_named(tiny_dataset, tmp_path, capsys):
    data = tmp_path / "parquet"
    shutil.copytree(tiny_dataset / "parquet", data)
    test_file = next(data.glob("test-*.parquet"))
    pq.write_table(pq.read_table(test_file).slice(0, 0), test_file)
    assert run_cli(tiny_overrides(data, tmp_path / "out")) == 2
    assert "the test split has no images" in one_error_line(capsys)


def test_single_class_training_data_is_refused(tiny_dataset, tmp_path, capsys):
    data = tmp_path / "parquet"
    shutil.copytree(tiny_dataset / "parquet", data)
    train_file = next(data.glob("train-*.parquet"))
    table = pq.read_table(train_file)
    pq.write_table(table.filter(pa.compute.equal(table["label"], 0)), train_file)
    assert run_cli(tiny_overrides(data, tmp_path / "out")) == 2
    assert "only 1 class" in one_error_line(capsys)


def test_corrupt_image_inside_a_ray_worker_is_reported_by_file_and_row(tiny_dataset, tmp_path, capsys,
                                                                        ray_cluster):
    data = tmp_path / "parquet"
    train_file = copy_with_broken_row(tiny_dataset / "parquet", data, "train", 7, "image", b"\x89PNG but not really")
    assert run_cli(tiny_overrides(data, tmp_path / "out")) == 2
    line = one_error_line(capsys)
    assert f"{train_file} row 7: cannot decode the image" in line


def test_cpu_settings_that_would_starve_ray_data_are_refused(tiny_dataset, tmp_path, capsys, ray_cluster):
    overrides = [*tiny_overrides(tiny_dataset / "parquet", tmp_path / "out"), "scaling.cpus_per_worker=1"]
    assert run_cli(overrides) == 2
    assert "leaves 0 of the cluster's 2 CPUs for Ray Data" in one_error_line(capsys)
