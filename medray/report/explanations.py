"""The explain stage's verdicts for the report: one row per method (the leaderboard) and each
class's verdict with the ROAD figures it rests on, read from `explain/checks.json`."""

from __future__ import annotations

import json
from pathlib import Path

from medray.explain.scorecard import cell, leaderboard

CHECKS = Path("explain") / "checks.json"


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
