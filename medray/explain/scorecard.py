"""The checks of every map, summarised per method: a text to print, checks.json and checks.png.

Every figure says how many images it rests on and carries a 95 % bootstrap confidence interval
(percentile method, 1,000 resamples): localisation on every image with a lesion mask, the
faithfulness curves and the sanity checks on the stratified sample.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from scipy import stats

from medray.explain.checks_plot import plot_checks
from medray.explain.sanity import sanity_verdict

LOCALISATION_COLUMNS = ("empty", "pointing_game", "energy_in_lesion", "lesion_share")
FAITHFULNESS = ("deletion_auc", "random_order_deletion_auc", "insertion_auc", "random_order_insertion_auc")
BOOTSTRAP_RESAMPLES = 1000
# Above this many values the normal approximation, which the bootstrap converges to for a mean,
# is used instead; below, resamples are drawn BOOTSTRAP_BATCH at a time, so the driver holds at
# most BOOTSTRAP_MAX_VALUES x BOOTSTRAP_BATCH values (8 MB) however many images were explained
# (all 1,000 resamples at once held 160 MB at 20,000 images).
BOOTSTRAP_MAX_VALUES = 10_000
BOOTSTRAP_BATCH = 100


def figure(values: np.ndarray, statistic: str = "mean") -> dict | None:
    """{"value", "ci": [low, high] (None below 2 values), "n"} of the non-NaN values; None if none."""
    values = np.asarray(values, np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return None
    function = np.mean if statistic == "mean" else np.median
    result = {"value": float(function(values)), "ci": None, "n": int(values.size)}
    if values.size >= 2 and np.ptp(values) == 0:
        result["ci"] = [result["value"], result["value"]]
    elif values.size > BOOTSTRAP_MAX_VALUES and statistic == "mean":
        half = 1.96 * values.std(ddof=1) / np.sqrt(values.size)
        result["ci"] = [result["value"] - half, result["value"] + half]
    elif values.size >= 2:
        interval = stats.bootstrap((values,), function, n_resamples=BOOTSTRAP_RESAMPLES, method="percentile",
                                   batch=BOOTSTRAP_BATCH, random_state=0).confidence_interval
        result["ci"] = [float(interval.low), float(interval.high)]
    return result


def value(fig: dict | None) -> float | None:
    return None if fig is None else fig["value"]


def score_methods(maps_dir: Path, sample_checks: Path | None = None, class_names: list[str] | None = None,
                  per_target: bool = False) -> dict:
    """{method: {figure: ...}} from the maps shards (every image) and the sample's checks;
    `per_target`: localisation also per class or label the maps explain (`per_target` figures:
    a multi-label task's pointing game per label, on the images that have that label's lesion).

    Shards are read one at a time and only their localisation numbers are kept (a few bytes a
    map); each image's maps are all in one shard, so distinct row ids per shard add up to the images.
    """
    columns: dict[str, dict[str, list[np.ndarray]]] = {}
    images: dict[str, int] = {}
    for shard in sorted(maps_dir.glob("part-*.parquet")):
        table = pq.read_table(shard, columns=["row_id", "method", "target", *LOCALISATION_COLUMNS])
        methods = table["method"].to_numpy(zero_copy_only=False)
        row_ids = table["row_id"].to_numpy(zero_copy_only=False)
        for method in dict.fromkeys(methods):
            chosen = methods == method
            images[method] = images.get(method, 0) + len(set(row_ids[chosen]))
            store = columns.setdefault(method, {name: [] for name in ("target", *LOCALISATION_COLUMNS)})
            for name in ("target", *LOCALISATION_COLUMNS):
                store[name].append(table[name].to_numpy(zero_copy_only=False)[chosen].astype(np.float32))
    settings_path = maps_dir.parent / "settings.json"
    tolerance = json.loads(settings_path.read_text()).get("pointing_tolerance_px", 0.0) if settings_path.is_file() else 0.0
    sample = pq.read_table(sample_checks) if sample_checks is not None else None
    steps = json.loads(sample.schema.metadata[b"cascade_steps"]) if sample is not None else []
    sample = sample.to_pandas() if sample is not None else None  # a few hundred maps
    scores = {}
    for method, store in columns.items():
        values = {name: np.concatenate(parts) for name, parts in store.items()}
        scores[method] = _localisation(values, images[method]) | {"pointing_tolerance_px": tolerance}
        if per_target:
            name_of = (lambda index: class_names[index]) if class_names else str
            scores[method]["per_target"] = {
                name_of(int(target)): _target_localisation({name: column[values["target"] == target]
                                                            for name, column in values.items()})
                for target in np.unique(values["target"]).astype(int)}
        if sample is not None:
            rows = sample[sample["method"] == method]
            scores[method].update(sample_figures(rows, steps, class_names))
    return scores


def _localisation(values: dict[str, np.ndarray], images: int) -> dict:
    with_lesion = ~np.isnan(values["pointing_game"])
    return {
        "maps": int(values["empty"].size),
        "images": int(images),
        "empty_share": float(values["empty"].mean()),
        "empty_maps": int(values["empty"].sum()),
        "lesion_maps": int(with_lesion.sum()),
        "pointing_game": figure(values["pointing_game"]),
        "energy_in_lesion": figure(values["energy_in_lesion"]),
        # the lesion's area share: what a map with no information scores on both
        "localisation_chance": figure(values["lesion_share"][with_lesion]),
    }


def _target_localisation(values: dict[str, np.ndarray]) -> dict:
    with_lesion = ~np.isnan(values["pointing_game"])
    return {"maps": int(values["empty"].size), "lesion_maps": int(with_lesion.sum()),
            "pointing_game": figure(values["pointing_game"]),
            "energy_in_lesion": figure(values["energy_in_lesion"]),
            "localisation_chance": figure(values["lesion_share"][with_lesion])}


def sample_figures(rows, steps: list[str], class_names: list[str] | None) -> dict:
    """Faithfulness overall and per true class (images without labels: per predicted class, named
    "<class> (predicted class)"), and the sanity checks with their verdict."""
    name_of = (lambda label: class_names[label]) if class_names else str
    if "labelled" not in rows:  # a sample table written before unlabelled images were told apart
        rows = rows.assign(labelled=True)
    per_class = {name_of(int(label)) + ("" if labelled else " (predicted class)"):
                 {"maps": int(len(group)), **{name: value(figure(group[name].to_numpy())) for name in FAITHFULNESS}}
                 for (label, labelled), group in rows.groupby(["label", "labelled"])}
    cascade_rank = np.stack(rows["cascade_rank_corr"].to_numpy()) if len(rows) else np.zeros((0, len(steps)))
    cascade_ssim = np.stack(rows["cascade_ssim"].to_numpy()) if len(rows) else np.zeros((0, len(steps)))
    tests = {
        "model_randomisation": {"rank_corr": figure(cascade_rank[:, -1], "median"),
                                "ssim": figure(cascade_ssim[:, -1], "median")},
        "data_randomisation": {"rank_corr": figure(rows["label_random_rank_corr"].to_numpy(), "median"),
                               "ssim": figure(rows["label_random_ssim"].to_numpy(), "median")},
    }
    reference = {"rank_corr": figure(rows["shared_rank_corr"].to_numpy(), "median"),
                 "ssim": figure(rows["shared_ssim"].to_numpy(), "median")}
    return {
        "sample_maps": int(len(rows)),
        "sample_images": int(rows["row_id"].nunique()),
        **{name: figure(rows[name].to_numpy()) for name in FAITHFULNESS},
        "per_class": per_class,
        "cascade": {"steps": steps,
                    "rank_corr": [value(figure(column, "median")) for column in cascade_rank.T],
                    "ssim": [value(figure(column, "median")) for column in cascade_ssim.T]},
        **tests,
        "shared_structure_reference": reference,
        **sanity_verdict(tests, reference),
    }


def write_scorecard(scores: dict, out_dir: Path) -> None:
    (out_dir / "checks.json").write_text(json.dumps(scores, indent=2))
    if any(score.get("sample_maps") for score in scores.values()):
        plot_checks(scores, out_dir / "checks.png")


def cell(fig: dict | float | None, digits: int = 3) -> str:
    """A figure as "0.123 [0.101, 0.145]", n/a where a check did not run."""
    if fig is None:
        return "n/a"
    if not isinstance(fig, dict):
        return f"{fig:.{digits}f}"
    interval = "" if fig["ci"] is None else f" [{fig['ci'][0]:.{digits}f}, {fig['ci'][1]:.{digits}f}]"
    return f"{fig['value']:.{digits}f}{interval}"


def format_scorecard(scores: dict) -> str:
    """A few lines per method, each figure with its 95 % interval and the images it rests on."""
    lines = []
    for method, score in scores.items():
        lines.append(f"{method}: {score['maps']} maps of {score['images']} images, {score['empty_maps']} empty"
                     + ("  EMPTY MAPS" if score["empty_maps"] else ""))
        if score["pointing_game"] is not None:
            lines.append(f"  localisation, every map with a lesion (n={score['lesion_maps']}): pointing game"
                         f"{_tolerance(score)} {cell(score['pointing_game'])}, energy in lesion {cell(score['energy_in_lesion'])}, "
                         f"chance {cell(value(score['localisation_chance']))}")
        for name, figures in score.get("per_target", {}).items():
            if figures["pointing_game"] is not None:
                lines.append(f"    {name:<24} (n={figures['lesion_maps']:>4} maps with its lesion): pointing game"
                             f"{_tolerance(score)} {cell(figures['pointing_game'])}, energy in lesion "
                             f"{cell(figures['energy_in_lesion'])}")
        if not score.get("sample_maps"):
            continue
        lines.append(f"  faithfulness, sample (n={score['deletion_auc']['n']} maps of {score['sample_images']} "
                     f"images): deletion {cell(score['deletion_auc'])} vs random order "
                     f"{cell(score['random_order_deletion_auc'])} (lower is better); insertion "
                     f"{cell(score['insertion_auc'])} vs random order {cell(score['random_order_insertion_auc'])} "
                     "(higher is better)")
        for name, figures in score["per_class"].items():
            lines.append(f"    {name:<24} (n={figures['maps']:>4}): deletion {cell(figures['deletion_auc'])} vs "
                         f"{cell(figures['random_order_deletion_auc'])}, insertion {cell(figures['insertion_auc'])} "
                         f"vs {cell(figures['random_order_insertion_auc'])}")
        reference = score["shared_structure_reference"]
        lines.append("  sanity checks (Adebayo et al. 2018), sample, median Spearman / SSIM with the trained "
                     f"model's map; two images' maps of one class: {cell(reference['rank_corr'])} / "
                     f"{cell(reference['ssim'])}")
        for test, label in (("model_randomisation", "weights re-initialised"),
                            ("data_randomisation", "labels permuted")):
            figures = score[test]
            lines.append(f"    {label:<24} {cell(figures['rank_corr'])} / {cell(figures['ssim'])}  "
                         f"{score['verdicts'][test] or 'not run'}")
        lines.append(f"  verdict: {score['verdict']}  ({score['verdict_rule']})")
    return "\n".join(lines)


def _tolerance(score: dict) -> str:
    tolerance = score.get("pointing_tolerance_px", 0.0)
    return f" (within {tolerance:g} px of the lesion)" if tolerance else ""
