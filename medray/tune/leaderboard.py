"""The leaderboard of a sweep, built from its results folder alone.

Each trial folder `<sweep>/<trial id>/` holds what Tune wrote (`params.json`, one `result.json`
line per epoch), what the trial wrote (`config.yaml`, `outcome.json` if its training ended by
itself) and, for the winner alone, the test split's `metrics.json`. `sweep.yaml` names the metric.
Rows are ranked by the validation value of the epoch each trial exports (`train.export_epoch`: its
best by the sweep's metric, or its last); test metrics never rank. The `chosen_by` column names
what chose the winner (the metric and the validation split); it is empty for every other row.

A cross-validated sweep (`cross_validation.folds: K`) ranks by the trials' `folds.json` instead:
its rows give `folds` (how many of the K were trained), each validation metric's mean over those
folds, the sweep metric's standard deviation over them (`<metric>_sd`) and each fold's exported
epoch (`fold_epochs`). Trials that trained all K folds come first; only they can win.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from medray.config import load_config
from medray.errors import MedrayError
from medray.tune.trial import FOLD_RESULTS, OUTCOME, TRIAL_CONFIG

SWEEP_FILE = "sweep.yaml"
LEADERBOARD_CSV, LEADERBOARD_MD, LEADERBOARD_PNG = "leaderboard.csv", "leaderboard.md", "leaderboard.png"
VAL_METRICS = ["val_auc", "val_accuracy", "val_loss"]
TEST_METRICS = {"accuracy": "test_accuracy", "roc_auc_ovr": "test_auc", "macro_f1": "test_macro_f1",
                "balanced_accuracy": "test_balanced_accuracy"}
# Tune writes error.txt into the folder of a trial that raised.
TUNE_ERROR_FILE = "error.txt"


def read_sweep(sweep_dir: Path):
    from medray.tune.space import parse_sweep
    import yaml

    path = Path(sweep_dir) / SWEEP_FILE
    if not path.is_file():
        raise MedrayError(f"{sweep_dir} holds no {SWEEP_FILE}; pass the folder `medray tune` printed")
    return parse_sweep(yaml.safe_load(path.read_text()), source=str(path))


def trial_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(path.parent for path in Path(sweep_dir).glob("*/params.json"))


def epoch_history(trial_dir: Path) -> pd.DataFrame:
    """Every epoch Tune received from this trial, the latest report of an epoch winning
    (a resumed trial may report an epoch again)."""
    path = trial_dir / "result.json"
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame(columns=["epoch"])
    rows = pd.read_json(path, lines=True)
    if "epoch" not in rows.columns:
        return pd.DataFrame(columns=["epoch"])
    rows = rows.dropna(subset=["epoch"])
    return rows.drop_duplicates("epoch", keep="last").sort_values("epoch", ignore_index=True)


def stop_reason(trial_dir: Path, last_epoch: int | None = None) -> str:
    """completed, early stopping, ASHA stopped (stopped before its epoch budget, without its training
    ending by itself), error or not run. `last_epoch`: the last epoch the trial reported, when known
    better than from result.json (which Tune may not have flushed yet)."""
    if (trial_dir / TUNE_ERROR_FILE).is_file():
        return "error"
    if (trial_dir / FOLD_RESULTS).is_file():  # cross-validated: ASHA stops a trial between folds
        record = json.loads((trial_dir / FOLD_RESULTS).read_text())
        return "completed" if len(record["folds"]) >= record["folds_planned"] else "ASHA stopped"
    outcome_path = trial_dir / OUTCOME
    if outcome_path.is_file():
        return "early stopping" if json.loads(outcome_path.read_text())["stop_reasons"] else "completed"
    if last_epoch is None:
        history = epoch_history(trial_dir)
        last_epoch = 0 if history.empty else int(history["epoch"].max())
    if not last_epoch:
        return "not run"
    # A rung can fall on a trial's last epoch (grace 8, factor 3, 24 epochs): that trial trained it all.
    return "completed" if last_epoch >= trial_epoch_budget(trial_dir) else "ASHA stopped"


def exported_row(trial_dir: Path, history: pd.DataFrame, metric: str, mode: str) -> pd.Series | None:
    """The epoch (row of `history`, sorted by epoch) whose model the trial exports: its best by
    `metric`, or its last when the trial's config says train.export_epoch: last."""
    if metric not in history.columns or history[metric].isna().all():
        return None
    if export_epoch(trial_dir) == "last":
        return history.iloc[-1]
    return history.loc[history[metric].idxmax() if mode == "max" else history[metric].idxmin()]


def export_epoch(trial_dir: Path) -> str:
    return load_config(trial_dir / TRIAL_CONFIG).train.export_epoch


def trial_epoch_budget(trial_dir: Path) -> int:
    train = load_config(trial_dir / TRIAL_CONFIG).train
    return train.epochs + train.fine_tune.epochs


def build_leaderboard(sweep_dir: str | Path) -> pd.DataFrame:
    """One row per trial, best first: hyperparameters, epochs, stop reason, validation and test metrics."""
    sweep_dir = Path(sweep_dir)
    sweep = read_sweep(sweep_dir)
    rows = []
    for trial_dir in trial_dirs(sweep_dir):
        if sweep.folds:
            rows.append(fold_row(trial_dir, sweep))
            continue
        params = json.loads((trial_dir / "params.json").read_text())
        history = epoch_history(trial_dir)
        exported = exported_row(trial_dir, history, sweep.metric, sweep.mode)
        row = {"trial": trial_dir.name, "stop_reason": stop_reason(trial_dir),
               "epochs": int(history["epoch"].max()) if not history.empty else 0,
               **{key: params.get(key) for key in sweep.space},
               "exported_epoch": int(exported["epoch"]) if exported is not None else None,
               **{name: (float(exported[name]) if exported is not None and name in exported else math.nan)
                  for name in VAL_METRICS}}
        row.update(test_columns(trial_dir))
        rows.append(row)
    if not rows:
        raise MedrayError(f"{sweep_dir} holds no trial folders (*/params.json); did the sweep start?")
    board = pd.DataFrame(rows)
    board = board.sort_values(sweep.metric, ascending=sweep.mode == "min", na_position="last", kind="stable")
    if sweep.folds:  # a mean over fewer folds is not comparable with a K-fold mean
        board = board.sort_values("folds", ascending=False, kind="stable")
    board.insert(0, "rank", range(1, len(board) + 1))
    board = board.reset_index(drop=True)
    board["chosen_by"] = ""
    if not ranked_trials(board, sweep).empty:
        board.loc[0, "chosen_by"] = (f"{sweep.metric} mean over {sweep.folds} folds (stratified K-fold on "
                                     "train+validation)" if sweep.folds else f"{sweep.metric} (validation split)")
    return board


def ranked_trials(board: pd.DataFrame, sweep) -> pd.DataFrame:
    """The rows that can win: a validation value, and with cross-validation all K folds trained."""
    ranked = board.dropna(subset=[sweep.metric])
    return ranked[ranked["folds"] == sweep.folds] if sweep.folds else ranked


def fold_row(trial_dir: Path, sweep) -> dict:
    """A cross-validated trial's leaderboard row, from its folds.json."""
    params = json.loads((trial_dir / "params.json").read_text())
    path = trial_dir / FOLD_RESULTS
    record = json.loads(path.read_text()) if path.is_file() else {"folds": []}
    sd = f"{sweep.metric}_sd"
    return {"trial": trial_dir.name, "stop_reason": stop_reason(trial_dir), "folds": len(record["folds"]),
            **{key: params.get(key) for key in sweep.space},
            "fold_epochs": " ".join(str(fold["exported_epoch"]) for fold in record["folds"]),
            sweep.metric: record.get(sweep.metric, math.nan), sd: record.get(sd, math.nan),
            **{name: record.get(name, math.nan) for name in VAL_METRICS if name != sweep.metric},
            **test_columns(trial_dir)}


def test_columns(trial_dir: Path) -> dict:
    """The test metrics of the winner (its metrics.json); None for every other trial."""
    metrics_path = trial_dir / "metrics.json"
    test = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    return {column: test.get(name) for name, column in TEST_METRICS.items()}


def write_leaderboard(sweep_dir: str | Path) -> pd.DataFrame:
    """leaderboard.csv, .md and .png in the sweep folder; returns the table."""
    sweep_dir = Path(sweep_dir)
    board = build_leaderboard(sweep_dir)
    board.to_csv(sweep_dir / LEADERBOARD_CSV, index=False)
    (sweep_dir / LEADERBOARD_MD).write_text(to_markdown(board))
    sweep = read_sweep(sweep_dir)
    label = (f"{sweep.metric}, mean over {sweep.folds} folds of train+validation" if sweep.folds
             else f"best {sweep.metric} (validation)")
    plot_leaderboard(board, sweep.metric, sweep_dir / LEADERBOARD_PNG, label)
    return board


def to_markdown(board: pd.DataFrame) -> str:
    def cell(value) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value).replace("|", "\\|")
    lines = ["| " + " | ".join(board.columns) + " |", "|" + "---|" * len(board.columns)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in board.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def plot_leaderboard(board: pd.DataFrame, metric: str, path: Path, label: str = "") -> Path:
    """Best validation value per trial, coloured by why the trial stopped; the winner's test AUC marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    colours = {"completed": "#1d5f8a", "early stopping": "#4f9d69", "ASHA stopped": "#c9a227",
               "error": "#b5452b", "not run": "#999999"}
    shown = board.iloc[::-1]
    figure, axes = plt.subplots(figsize=(7, 0.9 + 0.32 * len(board)))
    axes.barh(shown["trial"], shown[metric].fillna(0), color=[colours[reason] for reason in shown["stop_reason"]])
    handles = [Patch(color=colour, label=reason) for reason, colour in colours.items()
               if reason in set(board["stop_reason"])]
    tested = shown.dropna(subset=["test_auc"])
    if not tested.empty:
        handles.append(axes.scatter(tested["test_auc"], tested["trial"], marker="D", color="black", zorder=3,
                                    label="test AUC"))
    axes.set_xlabel(label or f"best {metric} (validation)")
    axes.legend(handles=handles, fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
