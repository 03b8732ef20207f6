"""What `ray job submit --working-dir .` would upload: counted with Ray's own selection, the
project's .rayignore keeping data out, and a too-large package refused before any upload."""

from __future__ import annotations

import shutil

import pytest

from medray.cli import main
from medray.submit import package_sizes

from conftest import ROOT

DOWNLOAD = 120 * 1024**2  # a Kaggle chest X-ray download left in the project folder


def project_with_a_dataset(tmp_path, rayignore: bool):
    project = tmp_path / "project"
    for folder in ("medray", "jobs", "configs"):
        shutil.copytree(ROOT / folder, project / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", project)
    if rayignore:
        shutil.copy(ROOT / ".rayignore", project)
    images = project / "chest_xray" / "train"
    images.mkdir(parents=True)
    with open(images / "images.bin", "wb") as handle:
        handle.truncate(DOWNLOAD)  # sparse: the size Ray would upload, without the disk writes
    return project


def test_the_rayignore_keeps_a_dataset_out_of_the_job_package(tmp_path):
    sizes = package_sizes(project_with_a_dataset(tmp_path, rayignore=True))
    assert set(sizes) == {"medray/", "jobs/", "configs/", "pyproject.toml"}
    assert sum(sizes.values()) < 5 * 1024**2


def test_a_package_over_the_upload_limit_is_refused_naming_the_largest_path(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(project_with_a_dataset(tmp_path, rayignore=False))
    # No job server is needed: the check stops the submission before `ray job submit` runs.
    assert main(["submit", "--address", "http://127.0.0.1:9", "--", "python", "jobs/run.py"]) == 2
    captured = capsys.readouterr()
    assert "job package" in captured.out and "MiB" in captured.out
    error = captured.err.strip().splitlines()
    assert len(error) == 1, error
    assert "chest_xray/ (120.0 MiB)" in error[0] and ".rayignore" in error[0] and "s3://" in error[0]


def test_submit_without_a_command_says_what_to_pass(capsys):
    assert main(["submit", "--"]) == 2
    assert "python jobs/run.py" in capsys.readouterr().err


@pytest.mark.parametrize("pattern", ["chest_xray", "chest_xray/"])
def test_excludes_leave_paths_out_of_the_count(tmp_path, pattern):
    project = project_with_a_dataset(tmp_path, rayignore=False)
    assert "chest_xray/" in package_sizes(project)
    assert "chest_xray/" not in package_sizes(project, excludes=[pattern])
