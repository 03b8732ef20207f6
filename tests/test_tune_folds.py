"""K-fold cross-validation in a sweep (cross_validation.folds): the folds are stratified, disjoint,
cover train+validation and keep duplicate images together; the search runs with the test split's
file moved away (so it cannot have read it); the leaderboard shows each trial's fold mean and SD;
only the winner is trained again and tested, once; and impossible fold counts are refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from medray.data.sources import discover
from medray.errors import MedrayError
from medray.tune.folds import FOLDS_FILE, assign_folds
from medray.tune.space import load_sweep
from medray.tune.sweep import finish_sweep, run_sweep, search

from conftest import DEMO_CONFIG

FOLDS = 2
LRS = [0.003, 0.01]


def write_sweep(folder: Path, data: Path, output: Path, **changes) -> Path:
    sweep = {
        "name": "tiny-cv", "base": str(DEMO_CONFIG), "search": "grid", "metric": "val_loss", "seed": 4,
        "set": {"data": {"path": str(data)}, "model": {"input_size": 32},
                "train": {"epochs": 1, "batch_size": 16, "lr_plateau_patience": 0},
                "explain": {"enabled": False, "batch_size": 16}, "report": {"enabled": False},
                "output": {"dir": str(output)}},
        "asha": {"enabled": False},
        "resources": {"workers_per_trial": 1, "cpus_per_worker": 0.5, "max_concurrent_trials": 1},
        "space": {"train.lr": {"choice": LRS}},
        "cross_validation": {"folds": FOLDS},
    }
    sweep.update(changes)
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def train_val_rows(source) -> dict[str, int]:
    return {row_id: label for split in ("train", "val") for piece in source.pieces[split]
            for row_id, label in zip(piece["row_ids"], piece["labels"])}


@pytest.fixture(scope="module")
def searched(tiny_dataset, tmp_path_factory, ray_cluster):
    """A 2-fold sweep of two trials whose search ran while the test split's file was moved away."""
    import shutil

    folder = tmp_path_factory.mktemp("cv")
    data = folder / "parquet"
    shutil.copytree(tiny_dataset / "parquet", data)
    sweep, base = load_sweep(write_sweep(folder, data, folder / "results"))
    source = discover(base.data)
    (test_file,) = data.glob("test-*.parquet")
    hidden = folder / "test-split-moved-away"
    test_file.rename(hidden)
    try:
        sweep_folder = search(sweep, base, source)
    finally:
        hidden.rename(test_file)
    tested_before_finish = sorted(path.parent.name for path in sweep_folder.local.glob("*/metrics.json"))
    outcome = finish_sweep(sweep_folder, sweep, base, source)
    return outcome, source, tested_before_finish


def test_folds_are_stratified_disjoint_and_cover_train_and_validation(searched):
    outcome, source, _ = searched
    folds = pd.read_parquet(outcome.sweep_dir / FOLDS_FILE)
    expected = train_val_rows(source)
    assert folds["row_id"].is_unique  # disjoint: each row is held out by exactly one fold
    assert set(folds["row_id"]) == set(expected)  # cover: every train and validation row, no test row
    assert sorted(folds["fold"].unique()) == list(range(FOLDS))
    for class_index, rows in folds.groupby("label"):
        per_fold = rows["fold"].value_counts().reindex(range(FOLDS), fill_value=0)
        assert per_fold.max() - per_fold.min() <= 1, f"class {class_index} is not stratified: {per_fold.tolist()}"


def test_every_trial_trained_each_fold_on_the_other_folds(searched):
    outcome, source, _ = searched
    total = len(train_val_rows(source))
    for trial in outcome.leaderboard["trial"]:
        record = json.loads((outcome.sweep_dir / trial / "folds.json").read_text())
        assert [fold["fold"] for fold in record["folds"]] == list(range(1, FOLDS + 1))
        assert all(fold["train_rows"] + fold["val_rows"] == total for fold in record["folds"])
        assert sum(fold["val_rows"] for fold in record["folds"]) == total


def test_the_search_ran_without_the_test_split_and_only_the_winner_is_tested_after_it(searched):
    outcome, _, tested_before_finish = searched
    board = outcome.leaderboard
    assert set(board["stop_reason"]) == {"completed"} and len(board) == len(LRS)  # no trial failed on the missing file
    assert tested_before_finish == []
    winner = board["trial"].iloc[0]
    assert sorted(path.parent.name for path in outcome.sweep_dir.glob("*/metrics.json")) == [winner]
    refit = json.loads((outcome.sweep_dir / winner / "refit" / "refit.json").read_text())
    assert refit["trained_on"] == "train" and refit["epoch_chosen_on"] == "validation"


def test_the_leaderboard_shows_the_fold_mean_and_sd(searched):
    outcome, _, _ = searched
    board = pd.read_csv(outcome.sweep_dir / "leaderboard.csv")
    assert {"folds", "val_loss", "val_loss_sd", "fold_epochs"} <= set(board.columns)
    for _, row in board.iterrows():
        values = [fold["val_loss"] for fold in
                  json.loads((outcome.sweep_dir / row["trial"] / "folds.json").read_text())["folds"]]
        assert row["folds"] == FOLDS
        assert row["val_loss"] == pytest.approx(np.mean(values))
        assert row["val_loss_sd"] == pytest.approx(np.std(values))
    assert board["val_loss"].is_monotonic_increasing
    assert board["chosen_by"].iloc[0] == "val_loss mean over 2 folds (stratified K-fold on train+validation)"


def test_the_output_says_the_winner_was_chosen_by_k_fold_on_train_and_validation(searched):
    outcome, _, _ = searched
    board = outcome.leaderboard
    selection = json.loads((outcome.sweep_dir / "selection.json").read_text())
    assert selection["chosen_on"] == "train+validation, 2-fold stratified cross-validation"
    assert selection["value"] == pytest.approx(board["val_loss"].iloc[0])
    assert selection["value_sd"] == pytest.approx(board["val_loss_sd"].iloc[0])
    assert selection["test"]["trials_evaluated"] == [board["trial"].iloc[0]]
    summary = (outcome.sweep_dir / "summary.txt").read_text()
    assert "mean ± SD over 2-fold stratified cross-validation on train+validation; the test split was not read" in summary


def test_fold_assignment_is_seeded_and_keeps_duplicate_images_in_one_fold():
    labels = np.array([0] * 12 + [1] * 8)
    groups = np.array([f"image{index}" for index in range(20)])
    groups[[0, 5, 9]] = "same-pixels"  # three copies of one class-0 image
    groups[[13, 14]] = "other-copy"
    first = assign_folds(labels, groups, 4, seed=7, class_names=["a", "b"])
    assert np.array_equal(first, assign_folds(labels, groups, 4, seed=7, class_names=["a", "b"]))
    assert len(set(first[[0, 5, 9]])) == 1 and len(set(first[[13, 14]])) == 1
    assert set(first) == {0, 1, 2, 3}


def test_fewer_than_two_folds_is_refused_naming_the_key(tmp_path, tiny_dataset):
    path = write_sweep(tmp_path, tiny_dataset / "parquet", tmp_path / "results", cross_validation={"folds": 1})
    with pytest.raises(MedrayError, match=r"cross_validation\.folds=1 is not allowed") as caught:
        load_sweep(path)
    assert "\n" not in str(caught.value)


def test_more_folds_than_the_smallest_class_has_images_is_refused_naming_the_key(tmp_path, tiny_dataset):
    sweep, base = load_sweep(write_sweep(tmp_path, tiny_dataset / "parquet", tmp_path / "results",
                                         cross_validation={"folds": 60}))
    with pytest.raises(MedrayError, match=r"cross_validation\.folds=60 is more than the \d+ train\+validation "
                                          r"images of class .*; set cross_validation\.folds to at most \d+") as caught:
        run_sweep(sweep, base)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "results").exists()  # refused before anything was written or started


def test_asha_rungs_count_folds_so_a_rung_compares_means_over_the_same_folds(tmp_path, tiny_dataset):
    from medray.tune.sweep import scheduler

    sweep, base = load_sweep(write_sweep(tmp_path, tiny_dataset / "parquet", tmp_path / "results",
                                         asha={"enabled": True, "grace_period": 1, "reduction_factor": 2},
                                         cross_validation={"folds": 4}))
    asha = scheduler(sweep, base)
    assert asha._time_attr == "fold" and asha._max_t == 5
    assert sorted(milestone for milestone, _recorded in asha._brackets[0]._rungs) == [1, 2, 4]
