"""The leaderboard from a sweep folder alone, on hand-written trial folders: each trial ranked by
the epoch it exports, and its stop reason read from what it wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from medray.config import RunConfig, to_yaml
from medray.tune.leaderboard import build_leaderboard


def write_trial(sweep_dir: Path, name: str, val_aucs: list[float], export_epoch: str = "best",
                budget: int | None = None, outcome: dict | None = None) -> None:
    trial_dir = sweep_dir / name
    trial_dir.mkdir()
    (trial_dir / "params.json").write_text(json.dumps({"train.lr": 0.001}))
    # The trial's full run config, as medray.tune.trial writes it.
    config = RunConfig.model_validate({"data": {"path": "data"},
                                       "train": {"export_epoch": export_epoch, "epochs": budget or len(val_aucs)}})
    (trial_dir / "config.yaml").write_text(to_yaml(config))
    rows = [{"epoch": epoch, "val_auc": auc, "val_accuracy": 0.9, "val_loss": 0.3}
            for epoch, auc in enumerate(val_aucs, start=1)]
    (trial_dir / "result.json").write_text("".join(json.dumps(row) + "\n" for row in rows))
    if outcome is not None:
        (trial_dir / "outcome.json").write_text(json.dumps(outcome))


def sweep_folder(tmp_path: Path, name: str) -> Path:
    sweep_dir = tmp_path / name
    sweep_dir.mkdir()
    (sweep_dir / "sweep.yaml").write_text(yaml.safe_dump({
        "name": name, "base": "base.yaml", "metric": "val_auc", "space": {"train.lr": {"choice": [0.001]}}}))
    return sweep_dir


def ranked(sweep_dir: Path) -> pd.DataFrame:
    return build_leaderboard(sweep_dir).set_index("trial")


def test_each_trial_is_ranked_by_the_epoch_it_exports(tmp_path):
    for export_epoch in ("best", "last"):
        sweep_dir = sweep_folder(tmp_path, export_epoch)
        # Trial a peaks early and falls; trial b ends higher than a ends.
        write_trial(sweep_dir, "a", [0.99, 0.90], export_epoch)
        write_trial(sweep_dir, "b", [0.93, 0.95], export_epoch)

    best = ranked(tmp_path / "best")
    assert best["rank"].to_dict() == {"a": 1, "b": 2}
    assert best.loc["a", ["exported_epoch", "val_auc"]].tolist() == pytest.approx([1, 0.99])

    last = ranked(tmp_path / "last")
    assert last["rank"].to_dict() == {"b": 1, "a": 2}
    assert last.loc["a", ["exported_epoch", "val_auc"]].tolist() == pytest.approx([2, 0.90])
    assert last.loc["b", ["exported_epoch", "val_auc"]].tolist() == pytest.approx([2, 0.95])


def test_a_trial_asha_stops_on_its_last_epoch_counts_as_completed(tmp_path):
    sweep_dir = sweep_folder(tmp_path, "reasons")
    write_trial(sweep_dir, "whole-budget", [0.9, 0.95, 0.96], outcome={"stop_reasons": []})
    write_trial(sweep_dir, "stopped-at-a-rung", [0.8], budget=3)
    # ASHA's rung fell on the last epoch: stopped by the scheduler, but nothing was left to train.
    write_trial(sweep_dir, "rung-on-the-last-epoch", [0.85, 0.9, 0.91], budget=3)
    write_trial(sweep_dir, "early-stopped", [0.7, 0.7], budget=3,
                outcome={"stop_reasons": ["phase 1 stopped early at epoch 2"]})
    reasons = ranked(sweep_dir)["stop_reason"].to_dict()
    assert reasons == {"whole-budget": "completed", "stopped-at-a-rung": "ASHA stopped",
                       "rung-on-the-last-epoch": "completed", "early-stopped": "early stopping"}
