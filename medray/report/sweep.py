"""A sweep's results folder: its leaderboard.csv and the metrics of every model, side by side.

The tune stage writes `leaderboard.csv` next to one folder per trial; the report shows the table as
it is (whatever columns tune chose) and reads each trial's `metrics.json` for the comparison.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from medray.errors import MedrayError

LEADERBOARD = "leaderboard.csv"
# The scalar test metrics compared across models, in the order they are shown.
COMPARED_METRICS = ["accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "roc_auc_ovr",
                    "expected_calibration_error"]


def read_leaderboard(results_dir: Path) -> pd.DataFrame | None:
    path = results_dir / LEADERBOARD
    if not path.is_file():
        return None
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise MedrayError(f"{path} is not a readable CSV table ({error}); rewrite it or delete it "
                          "and rerun the sweep") from None
    if table.columns.empty:
        raise MedrayError(f"{path} has no columns; rewrite it or delete it and rerun the sweep")
    return table


def read_model_metrics(results_dir: Path) -> pd.DataFrame:
    """One row per sub-folder with a metrics.json, indexed by folder name, the compared metrics as columns."""
    rows = {}
    for path in sorted(results_dir.glob("*/metrics.json")):
        try:
            metrics = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise MedrayError(f"{path} is not valid JSON ({error}); rerun that model or delete its folder") from None
        rows[path.parent.name] = {name: metrics.get(name) for name in COMPARED_METRICS}
    return pd.DataFrame.from_dict(rows, orient="index", columns=COMPARED_METRICS, dtype=float)
