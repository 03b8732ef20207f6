"""The checks of every map, summarised per method: a table to print, checks.json and checks.png."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pyarrow.parquet as pq

# Adebayo et al.: a map that still ranks pixels alike after the weights are re-initialised shows
# the architecture, not what the model learned. A median Spearman rho at or above this fails.
RANDOMISATION_MAX_RANK_CORR = 0.5
NUMBER_COLUMNS = ("empty", "pointing_game", "energy_in_lesion", "lesion_share", "deletion_auc", "insertion_auc",
                  "random_order_deletion_auc", "random_order_insertion_auc", "random_model_rank_corr")
SUMMARY_COLUMNS = ("row_id", "method", *NUMBER_COLUMNS)


def score_methods(maps_dir: Path) -> dict:
    """{method: {figure: value}} over every map in the shards of `maps_dir`.

    Shards are read one at a time and only their numbers are kept (a few bytes a map), so the
    driver's memory does not grow with the number of images; each image's maps are all in one
    shard, so distinct row ids per shard add up to the images.
    """
    columns: dict[str, dict[str, list[np.ndarray]]] = {}
    images: dict[str, int] = {}
    for shard in sorted(maps_dir.glob("part-*.parquet")):
        table = pq.read_table(shard, columns=list(SUMMARY_COLUMNS))
        methods = table["method"].to_numpy(zero_copy_only=False)
        row_ids = table["row_id"].to_numpy(zero_copy_only=False)
        for method in dict.fromkeys(methods):
            chosen = methods == method
            images[method] = images.get(method, 0) + len(set(row_ids[chosen]))
            store = columns.setdefault(method, {name: [] for name in NUMBER_COLUMNS})
            for name in NUMBER_COLUMNS:
                store[name].append(table[name].to_numpy(zero_copy_only=False)[chosen].astype(np.float32))
    return {method: _score({name: np.concatenate(parts) for name, parts in store.items()}, images[method])
            for method, store in columns.items()}


def _score(values: dict[str, np.ndarray], images: int) -> dict:
    def mean(name: str, where: np.ndarray | None = None) -> float | None:
        column = values[name] if where is None else values[name][where]
        column = column[~np.isnan(column)]
        return None if column.size == 0 else float(column.mean())

    with_lesion = ~np.isnan(values["pointing_game"])
    rank_corr = values["random_model_rank_corr"][~np.isnan(values["random_model_rank_corr"])]
    median_corr = None if rank_corr.size == 0 else float(np.median(rank_corr))
    return {
        "maps": int(values["empty"].size),
        "images": int(images),
        "empty_share": float(values["empty"].mean()),
        "empty_maps": int(values["empty"].sum()),
        "lesion_maps": int(with_lesion.sum()),
        "pointing_game": mean("pointing_game"),
        "energy_in_lesion": mean("energy_in_lesion"),
        # the lesion's area share: what a map with no information scores on both
        "localisation_chance": mean("lesion_share", with_lesion) if with_lesion.any() else None,
        "deletion_auc": mean("deletion_auc"),
        "random_order_deletion_auc": mean("random_order_deletion_auc"),
        "insertion_auc": mean("insertion_auc"),
        "random_order_insertion_auc": mean("random_order_insertion_auc"),
        "random_model_rank_corr_median": median_corr,
        "randomisation_check": None if median_corr is None else (
            "passed" if median_corr < RANDOMISATION_MAX_RANK_CORR else "FAILED"),
    }


def write_scorecard(scores: dict, out_dir: Path) -> None:
    (out_dir / "checks.json").write_text(json.dumps(scores, indent=2))
    if scores and any(score["deletion_auc"] is not None for score in scores.values()):
        plot_scorecard(scores, out_dir / "checks.png")


def format_scorecard(scores: dict) -> str:
    """One line per method; n/a where a check did not run (no masks, checks off)."""
    def cell(value, digits=3):
        return "n/a" if value is None else f"{value:.{digits}f}"

    header = (f"{'method':<10} {'maps':>6} {'empty':>6} {'pointing':>9} {'energy':>7} {'chance':>7} "
              f"{'deletion':>9} {'(random)':>9} {'insertion':>10} {'(random)':>9} {'rand.rho':>9}  check")
    lines = [header]
    for method, score in scores.items():
        lines.append(
            f"{method:<10} {score['maps']:>6} {cell(score['empty_share']):>6} {cell(score['pointing_game']):>9} "
            f"{cell(score['energy_in_lesion']):>7} {cell(score['localisation_chance']):>7} "
            f"{cell(score['deletion_auc']):>9} {cell(score['random_order_deletion_auc']):>9} "
            f"{cell(score['insertion_auc']):>10} {cell(score['random_order_insertion_auc']):>9} "
            f"{cell(score['random_model_rank_corr_median']):>9}  {score['randomisation_check'] or 'n/a'}"
            + ("  EMPTY MAPS" if score["empty_maps"] else ""))
    return "\n".join(lines)


def plot_scorecard(scores: dict, path: Path) -> None:
    """Each check as bars per method, next to its no-information reference."""
    panels = [("pointing game", "pointing_game", "localisation_chance", "higher is better"),
              ("energy in lesion", "energy_in_lesion", "localisation_chance", "higher is better"),
              ("deletion AUC", "deletion_auc", "random_order_deletion_auc", "lower is better"),
              ("insertion AUC", "insertion_auc", "random_order_insertion_auc", "higher is better"),
              ("rank corr. with random model", "random_model_rank_corr_median", None, "lower is better")]
    methods = list(scores)
    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2))
    positions = np.arange(len(methods))
    for axis, (title, key, reference, hint) in zip(axes, panels):
        values = [scores[m][key] if scores[m][key] is not None else np.nan for m in methods]
        axis.bar(positions - 0.2 if reference else positions, values, width=0.4, label="map", color="tab:red")
        if reference:
            references = [scores[m][reference] if scores[m][reference] is not None else np.nan for m in methods]
            axis.bar(positions + 0.2, references, width=0.4, label="no-information reference", color="tab:gray")
        if key == "random_model_rank_corr_median":
            axis.axhline(RANDOMISATION_MAX_RANK_CORR, color="black", linestyle="--", linewidth=1)
        axis.set_xticks(positions, methods, rotation=30)
        axis.set_title(f"{title}\n({hint})", fontsize=9)
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
