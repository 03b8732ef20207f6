"""The explain stage's output for the report, read from the run's `explain/` folder: one row per
method (the leaderboard) and each class's verdict with the ROAD figures it rests on
(`checks.json`), map stability against correctness (the sample's test-time augmentation,
`sample_checks.parquet`), and, when several methods ran, each class's chosen image under every
method (the `maps/` table and its overlays)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from medray.explain.sample_checks import SAMPLE_CHECKS
from medray.explain.scorecard import cell, leaderboard
from medray.report.plots import plot_spread_by_correctness

EXPLAIN = Path("explain")
CHECKS = EXPLAIN / "checks.json"
MAP_COLUMNS = ["row_id", "label", "prediction", "target", "confidence", "method", "layer", "overlay_file"]


def explanation_verdicts(run_dir: Path) -> list[dict]:
    """[{"method", "pointing_game", "road", "randomisation", "verdict", "seconds_per_map", "classes"}]
    as display strings; empty when the run has no sample checks."""
    path = run_dir / CHECKS
    if not path.is_file():
        return []
    scores = json.loads(path.read_text())
    rows = []
    for row in leaderboard(scores):
        score = scores[row["method"]]
        if not score.get("sample_maps"):
            continue
        rows.append({
            "method": row["method"], "pointing_game": cell(row["pointing_game"]),
            "road": cell(row["road_difference"]), "randomisation": row["randomisation"] or "not run",
            "verdict": row["verdict"],
            "seconds_per_map": "n/a" if row["seconds_per_map"] is None else f"{row['seconds_per_map']:.3f}",
            "classes": [{"name": name, "maps": figures["maps"], "road": cell(figures["road"]),
                         "random_order_road": cell(figures["random_order_road"]),
                         "difference": cell(figures["road_difference"]),
                         "concentration": cell(figures["concentration"]), "verdict": figures["verdict"]}
                        for name, figures in score["per_class"].items()]})
    return rows


def uncertainty_by_correctness(run_dir: Path, plot_dir: Path) -> dict | None:
    """{"figure": path relative to the run, "methods": [{"method", "correct", "misclassified"}]}: per
    method, the median map spread and n of the sample's labelled images the model got right and
    wrong (one CAM layer a method: its first); None without a sample table with test-time augmentation."""
    path = run_dir / EXPLAIN / SAMPLE_CHECKS
    if not path.is_file():
        return None
    rows = pq.read_table(path).to_pandas()
    if "map_spread" not in rows or "labelled" not in rows:
        return None
    # A method whose maps cost many passes re-explains a sub-sample (NaN spread elsewhere).
    rows = rows[rows["labelled"] & rows["map_spread"].notna()]
    rows = rows[rows["layer"] == rows.groupby("method")["layer"].transform("first")]
    if rows.empty:
        return None
    groups = {method: {"correct": group.loc[group["correct"], "map_spread"].to_numpy(),
                       "misclassified": group.loc[~group["correct"], "map_spread"].to_numpy()}
              for method, group in rows.groupby("method", sort=False)}
    figure = plot_spread_by_correctness(groups, plot_dir / "map_spread_by_correctness.png")

    def median(values: np.ndarray) -> str:
        return f"{np.median(values):.3f} (n={values.size})" if values.size else "n/a (n=0)"

    return {"figure": figure.relative_to(run_dir).as_posix(),
            "methods": [{"method": method, "correct": median(by_group["correct"]),
                         "misclassified": median(by_group["misclassified"])} for method, by_group in groups.items()]}


def methods_by_class(run_dir: Path, class_names: list[str]) -> dict | None:
    """With several methods: {"methods": [...], "rows": [{"class", "row_id", "correct", "overlays":
    [path relative to the run, or None per method]}]}, one row per class showing the same image
    under each method: the most confident correctly classified image of the class (else its most
    confident image), explained for the class it was predicted as. None with one method or no overlays."""
    maps_dir = run_dir / EXPLAIN / "maps"
    if not maps_dir.is_dir():
        return None
    dataset = ds.dataset(maps_dir, format="parquet")
    if not set(MAP_COLUMNS) <= set(dataset.schema.names):
        return None
    maps = dataset.to_table(columns=MAP_COLUMNS).to_pandas()
    maps = maps[maps["overlay_file"].notna() & (maps["target"] == maps["prediction"])]
    methods = list(dict.fromkeys(maps["method"]))
    if len(methods) < 2:
        return None
    maps = maps[maps["layer"] == maps.groupby("method")["layer"].transform("first")]
    first = maps[maps["method"] == methods[0]].assign(correct=lambda frame: frame["label"] == frame["prediction"])
    rows = []
    for index, name in enumerate(class_names):
        candidates = first[first["label"] == index].sort_values(["correct", "confidence", "row_id"],
                                                                ascending=[False, False, True])
        if candidates.empty:
            continue
        chosen = candidates.iloc[0]
        same = maps[maps["row_id"] == chosen["row_id"]].drop_duplicates("method").set_index("method")["overlay_file"]
        overlays = [(EXPLAIN / "overlays" / same[method]).as_posix() if method in same.index
                    and (run_dir / EXPLAIN / "overlays" / same[method]).is_file() else None for method in methods]
        rows.append({"class": name, "row_id": str(chosen["row_id"]), "correct": bool(chosen["correct"]),
                     "predicted": class_names[int(chosen["prediction"])], "overlays": overlays})
    return {"methods": methods, "rows": rows} if rows else None
