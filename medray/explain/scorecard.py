"""The checks of every map, summarised per method: a text to print, checks.json and checks.png.

Every figure says how many images it rests on and carries a 95 % bootstrap confidence interval
(percentile method, 1,000 resamples): localisation on every image with a lesion mask, ROAD and
the sanity checks on the stratified sample. The verdicts (`medray.explain.verdicts`) are read
from the same figures that are printed beside them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from scipy import stats

from medray.explain.checks_plot import plot_checks
from medray.explain import verdicts
from medray.explain.sanity import sanity_verdict

LOCALISATION_COLUMNS = ("empty", "pointing_game", "energy_in_lesion", "lesion_share")
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
    metadata = (sample.schema.metadata or {}) if sample is not None else {}
    steps = json.loads(metadata[b"cascade_steps"]) if sample is not None else []
    cost = json.loads(metadata.get(b"cost_seconds", b"{}"))
    re_explained = json.loads(metadata.get(b"re_explained", b"{}"))  # medray.explain.sample_checks.RE_EXPLAINED
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
            scores[method]["cost"] = check_cost(cost, method, len(rows), re_explained.get(method))
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


def check_cost(cost: dict, method: str, maps: int, re_explained: dict | None = None) -> dict | None:
    """{"seconds": {check: s}, "shared": {check: s}, "per_map": s, "re_explained": {"images",
    "sampled", "passes_per_map", "re_explanations"} or None}: what the sample's checks of `method`
    took (shared: the random-order reference, the randomised copy and the label-permuted model,
    paid once) and, from `re_explained`, how many sampled images its re-explaining checks ran on
    (medray.explain.sample_checks)."""
    if method not in cost or not maps:
        return None
    own = cost[method]
    return {"seconds": own, "shared": cost.get("shared", {}), "per_map": sum(own.values()) / maps,
            "re_explained": re_explained}


def _road_figures(group) -> dict:
    morf, lerf = (np.stack(group[name].to_numpy()) for name in ("road_morf", "road_lerf"))
    return {"road": figure(group["road"].to_numpy()),
            "random_order_road": figure(group["random_order_road"].to_numpy()),
            "road_difference": figure(verdicts.paired_difference(group["road"], group["random_order_road"])),
            "road_morf": value(figure(morf.mean(axis=1))), "road_lerf": value(figure(lerf.mean(axis=1))),
            "concentration": value(figure(group["concentration"].to_numpy(), "median"))}


def _uncertainty_figures(rows) -> dict:
    """Test-time augmentation: map spread and entropy, and the spread on right and wrong predictions."""
    if "map_spread" not in rows:  # a sample table written before test-time augmentation
        return {}
    correct = rows["correct"].to_numpy(bool)
    return {"map_spread": figure(rows["map_spread"].to_numpy()), "entropy": figure(rows["entropy"].to_numpy()),
            "map_spread_correct": figure(rows["map_spread"].to_numpy()[correct]),
            "map_spread_misclassified": figure(rows["map_spread"].to_numpy()[~correct])}


def sample_figures(rows, steps: list[str], class_names: list[str] | None) -> dict:
    """ROAD overall and per true class (images without labels: per predicted class, named
    "<class> (predicted class)"), the sanity checks, and the verdicts per class and per method."""
    name_of = (lambda label: class_names[label]) if class_names else str
    if "labelled" not in rows:  # a sample table written before unlabelled images were told apart
        rows = rows.assign(labelled=True)
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
    sanity = sanity_verdict(tests, reference)
    failed = (sanity["verdict"] or "").startswith("FAILED")
    per_class = {}
    for (label, labelled), group in rows.groupby(["label", "labelled"]):
        figures = {"maps": int(len(group)), **_road_figures(group)}
        figures["verdict"] = verdicts.class_verdict(failed, figures["concentration"], figures["road_difference"])
        per_class[name_of(int(label)) + ("" if labelled else " (predicted class)")] = figures
    overall = _road_figures(rows)
    return {
        **_uncertainty_figures(rows),
        "sample_maps": int(len(rows)),
        "sample_images": int(rows["row_id"].nunique()),
        **overall,
        "per_class": per_class,
        "cascade": {"steps": steps,
                    "rank_corr": [value(figure(column, "median")) for column in cascade_rank.T],
                    "ssim": [value(figure(column, "median")) for column in cascade_ssim.T]},
        **tests,
        "shared_structure_reference": reference,
        "verdicts": sanity["verdicts"],
        "randomisation_verdict": sanity["verdict"],
        "randomisation_rule": sanity["verdict_rule"],
        "verdict": verdicts.method_verdict(sanity["verdict"], {name: figures["verdict"] for name, figures
                                                               in per_class.items()}, overall["road_difference"]),
        "verdict_rule": verdicts.RULE,
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


def leaderboard(scores: dict) -> list[dict]:
    """One row per method, on the same images: localisation (pointing game, where masks exist),
    ROAD against random order, randomisation, the verdict and the checks' seconds per sampled map."""
    return [{"method": method, "pointing_game": score.get("pointing_game"),
             "road_difference": score.get("road_difference"), "randomisation": score.get("randomisation_verdict"),
             "verdict": score.get("verdict"), "seconds_per_map": (score.get("cost") or {}).get("per_map")}
            for method, score in scores.items()]


def format_leaderboard(scores: dict) -> list[str]:
    lines = ["methods on the same images: pointing game | ROAD - random order | randomisation | checks, s per map"]
    for row in leaderboard(scores):
        seconds = "n/a" if row["seconds_per_map"] is None else f"{row['seconds_per_map']:.3f}"
        lines.append(f"  {row['method']:<10} {cell(row['pointing_game'])} | {cell(row['road_difference'])} | "
                     f"{row['randomisation'] or 'not run'} | {seconds}")
    return lines


def format_scorecard(scores: dict) -> str:
    """A few lines per method, each figure with its 95 % interval and the images it rests on;
    with several methods, a leaderboard first."""
    lines = format_leaderboard(scores) if len(scores) > 1 else []
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
        lines.append(f"  faithfulness, sample (n={score['road']['n']} maps of {score['sample_images']} images): ROAD "
                     f"{cell(score['road'])} vs random order {cell(score['random_order_road'])} (higher is better; "
                     f"difference {cell(score['road_difference'])}); most relevant first {cell(score['road_morf'])}, "
                     f"least relevant first {cell(score['road_lerf'])}")
        for name, figures in score["per_class"].items():
            lines.append(f"    {name:<24} (n={figures['maps']:>4}): ROAD {cell(figures['road'])} vs "
                         f"{cell(figures['random_order_road'])}, difference {cell(figures['road_difference'])}, "
                         f"top-5 % energy {cell(figures['concentration'])}: {figures['verdict']}")
        if score.get("map_spread"):
            lines.append(f"  uncertainty, test-time augmentation (flip, shifts): map spread (per-pixel SD) "
                         f"{cell(score['map_spread'])}, on correct predictions {_with_n(score['map_spread_correct'])}, "
                         f"on misclassified {_with_n(score['map_spread_misclassified'])}; predictive entropy "
                         f"{cell(score['entropy'])} bits{_maps_n(score['map_spread'])}")
        reference = score["shared_structure_reference"]
        lines.append("  sanity checks (Adebayo et al. 2018), sample, median Spearman / SSIM with the trained "
                     f"model's map; two images' maps of one class: {cell(reference['rank_corr'])} / "
                     f"{cell(reference['ssim'])}")
        for test, label in (("model_randomisation", "weights re-initialised"),
                            ("data_randomisation", "labels permuted")):
            figures = score[test]
            lines.append(f"    {label:<24} {cell(figures['rank_corr'])} / {cell(figures['ssim'])}  "
                         f"{score['verdicts'][test] or 'not run'}{_maps_n(figures['rank_corr'])}")
        lines.append(f"    randomisation: {score['randomisation_verdict'] or 'not run'}  ({score['randomisation_rule']})")
        lines.append(f"  verdict: {score['verdict']}  ({score['verdict_rule']})")
        if score.get("cost"):
            lines.append("  " + format_cost(score["cost"]))
    return "\n".join(lines)


def _tolerance(score: dict) -> str:
    tolerance = score.get("pointing_tolerance_px", 0.0)
    return f" (within {tolerance:g} px of the lesion)" if tolerance else ""


def _maps_n(fig: dict | None) -> str:
    """" (n=7 maps)": how many sampled maps a figure of the re-explaining checks rests on."""
    return "" if fig is None else f" (n={fig['n']} maps)"


def _with_n(fig: dict | None) -> str:
    return "n/a (n=0)" if fig is None else f"{cell(fig)} (n={fig['n']})"


def format_cost(cost: dict) -> str:
    """"cost of the checks: 0.123 s per sampled map (maps 1.2 s, ROAD 10.3 s, ...; shared ...);
    cascade, label permutation and test-time augmentation on 7 of 24 sampled images (...)"."""
    own = ", ".join(f"{check} {seconds:.1f} s" for check, seconds in cost["seconds"].items())
    shared = ", ".join(f"{check} {seconds:.1f} s" for check, seconds in cost["shared"].items())
    line = (f"cost of the checks: {cost['per_map']:.3f} s per sampled map ({own})"
            + (f"; shared by the methods: {shared}" if shared else ""))
    again = cost.get("re_explained")
    if again:
        checks = again.get("checks", ["cascade", "label permutation", "test-time augmentation"])
        line += (f"; {', '.join(checks[:-1])} and {checks[-1]} re-explain {again['images']} of "
                 f"{again['sampled']} sampled images {again['re_explanations']} times "
                 f"({again['passes_per_map']:,} model pass{'es' if again['passes_per_map'] != 1 else ''} a map")
        line += (f"; a stratified sub-sample: at most {again['budget_maps']} maps' passes per sampled image)"
                 if again["images"] < again["sampled"] else ")")
    return line
