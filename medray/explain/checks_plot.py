"""checks.png: the sanity checks' cascade curves and ROAD per class against random order."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def plot_checks(scores: dict, path: Path) -> None:
    """One row per method: Spearman and SSIM along the cascade (top block first) with the
    label-permuted model and the two-images reference as horizontal lines; then ROAD per true
    class next to random order, with each class's verdict."""
    methods = [method for method, score in scores.items() if score.get("sample_maps")]
    figure, axes = plt.subplots(len(methods), 3, figsize=(14, 3.6 * len(methods)), squeeze=False)
    for row, method in zip(axes, methods):
        score = scores[method]
        for axis, measure, title in zip(row[:2], ("rank_corr", "ssim"), ("Spearman rank correlation", "SSIM")):
            _cascade_panel(axis, score, measure, f"{method}: {title} with the trained model's map")
        _faithfulness_panel(row[2], score, f"{method}: ROAD per true class (higher is better)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _cascade_panel(axis, score: dict, measure: str, title: str) -> None:
    steps = score["cascade"]["steps"]
    values = [np.nan if v is None else v for v in score["cascade"][measure]]
    positions = np.arange(1, len(steps) + 1)
    axis.plot([0, *positions], [1.0, *values], marker="o", color="tab:red", label="weights re-initialised, cascade")
    permuted = score["data_randomisation"][measure]
    if permuted is not None:
        axis.axhline(permuted["value"], color="tab:blue", linestyle="-.", label="labels permuted")
    reference = score["shared_structure_reference"][measure]
    if reference is not None:
        axis.axhline(reference["value"], color="black", linestyle="--", linewidth=1,
                     label="two images of one class (reference)")
    axis.set_xticks([0, *positions], ["trained", *steps], rotation=45, ha="right", fontsize=7)
    axis.set_ylim(-1.05 if measure == "rank_corr" else -0.1, 1.05)
    axis.set_title(f"{title}\nrandomisation: {score.get('randomisation_verdict')}", fontsize=9)
    axis.legend(fontsize=6, loc="best")


def _faithfulness_panel(axis, score: dict, title: str) -> None:
    classes = list(score["per_class"])
    positions = np.arange(len(classes))
    bars = (("road", -0.2, "tab:green", "ROAD of the maps"), ("random_order_road", 0.2, "lightgray", "random order"))
    for key, offset, colour, label in bars:
        heights = [np.nan if score["per_class"][c][key] is None else score["per_class"][c][key]["value"]
                   for c in classes]
        errors = np.array([[h - f["ci"][0], f["ci"][1] - h] if (f := score["per_class"][c][key]) and f["ci"] else
                           [0, 0] for c, h in zip(classes, heights)]).T
        axis.bar(positions + offset, heights, width=0.4, color=colour, label=label, yerr=errors, capsize=2)
    axis.axhline(0, color="black", linewidth=0.8)
    axis.set_xticks(positions, [f"{c}\n(n={score['per_class'][c]['maps']})\n{score['per_class'][c]['verdict']}"
                                for c in classes], fontsize=7)
    axis.set_ylim(-0.5, 0.5)
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=6)
