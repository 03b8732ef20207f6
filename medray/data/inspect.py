"""`medray data inspect`: a dataset's quality report, from one Ray Data pass over every row.

Per split: class counts (multi-label: images with each label present) and imbalance; image sizes
and stored modes; rows that cannot be used and why; exact duplicates (same decoded pixels) within a
split and across splits (train/test leakage); a short ranked list of brightness and contrast
outliers (robust z-score within split and class, or label combination); and acquisition shortcuts
(shortcuts.py; single-label data only). Written as inspect.json and inspect.png.
With dedupe, a manifest without duplicates and leaked rows is written for `data.manifest`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from medray.data.manifest import OK, manifest_labels, row_warnings, scan_rows, write_manifest
from medray.data.shortcuts import format_shortcuts, shortcut_report
from medray.data.sources import SPLITS, count_labels, discover
from medray.data.sources.base import row_label
from medray.data.validation import small_validation_warnings
from medray.filenames import safe_filename

# |robust z| above this marks an outlier (Iglewicz and Hoaglin's usual cut-off).
OUTLIER_Z = 3.5
EXAMPLES = 50
# Unusable rows named on the console; inspect.json lists them all.
UNUSABLE_SHOWN = 5
# The most extreme outliers listed (inspect.json), ranked; the console shows the first few.
OUTLIERS_RANKED, OUTLIERS_SHOWN = 10, 3


def inspect_data(config, out_dir: Path, dedupe: bool = False) -> dict:
    from medray.cluster import connect

    # Inspection reports unusable rows instead of stopping at the first one.
    data_config = config.data.model_copy(update={"on_bad_image": "skip", "manifest": None})
    source = discover(data_config)
    connect(config.scaling)
    frame = scan_rows(source, data_config)
    report = quality_report(frame, source.class_names, source.multi_label)
    report["ignored_files"] = {"count": len(source.ignored_files), "files": source.ignored_files[:EXAMPLES]}
    report["validation_warnings"] = small_validation_warnings(source, data_config.min_val_per_class)
    report["color"] = {"setting": data_config.color, "used": source.color}
    out_dir.mkdir(parents=True, exist_ok=True)
    if dedupe:
        frame, report["dedupe"] = deduplicate(frame)
        report["dedupe"]["manifest"] = str(write_manifest(frame, out_dir / "manifest.parquet", config.data,
                                                                  source.color))
    (out_dir / "inspect.json").write_text(json.dumps(report, indent=2, default=_plain))
    plot_inspection(report, frame, out_dir / "inspect.png")
    report["written"] = [str(out_dir / "inspect.json"), str(out_dir / "inspect.png")]
    return report


def _plain(value):
    return value.item() if isinstance(value, np.generic) else str(value)


def quality_report(frame: pd.DataFrame, class_names: list[str], multi_label: bool = False) -> dict:
    used = frame[frame["status"] == OK]
    return {
        "class_names": class_names,
        "multi_label": multi_label,
        "rows": len(frame),
        "splits": {split: split_summary(frame[frame["split"] == split], class_names) for split in SPLITS},
        "sizes": _counts(used["width"].astype(str) + "x" + used["height"].astype(str)),
        "modes": _counts(used["mode"]),
        "unusable": frame[frame["status"] != OK][["row_id", "split", "source", "status", "message"]]
        .to_dict("records"),
        "warnings": row_warnings(frame),
        "duplicates_within_splits": duplicates_within(used),
        "duplicates_across_splits": duplicates_across(used),
        "outliers": outliers(used),
        "shortcuts": shortcut_report(used, class_names),
    }


def split_summary(rows: pd.DataFrame, class_names: list[str]) -> dict:
    used = rows[rows["status"] == OK]
    counts = np.asarray(count_labels([{"labels": manifest_labels(used["label"])}], len(class_names)))
    present = counts[counts > 0]
    return {
        "rows": len(rows),
        "used": len(used),
        "class_counts": dict(zip(class_names, counts.tolist())),
        # largest class over smallest; None when a class is missing entirely
        "imbalance_ratio": float(present.max() / present.min()) if len(present) == len(class_names) else None,
        "unusable_by_reason": _counts(rows.loc[rows["status"] != OK, "status"]),
    }


def _counts(values: pd.Series) -> dict:
    return {str(key): int(count) for key, count in values.value_counts().items()}


def duplicates_within(used: pd.DataFrame) -> dict:
    result = {}
    for split in SPLITS:
        rows = used[used["split"] == split]
        groups = [group["row_id"].tolist() for _, group in rows.groupby("content_hash", sort=False) if len(group) > 1]
        result[split] = {"extra_copies": int(rows["content_hash"].duplicated().sum()), "groups": len(groups),
                         "examples": groups[:EXAMPLES]}
    return result


def duplicates_across(used: pd.DataFrame) -> dict:
    """Images in more than one split: a model tested on images it trained on scores too well."""
    result = {}
    for index, first in enumerate(SPLITS):
        for second in SPLITS[index + 1:]:
            shared = set(used.loc[used["split"] == first, "content_hash"]) & set(
                used.loc[used["split"] == second, "content_hash"])
            rows = used[used["content_hash"].isin(shared) & used["split"].isin((first, second))]
            examples = [group["row_id"].tolist() for _, group in rows.groupby("content_hash", sort=False)]
            result[f"{first}-{second}"] = {"images": len(shared), "examples": examples[:EXAMPLES]}
    return result


def robust_z(values: pd.Series) -> pd.Series:
    median = values.median()
    mad = (values - median).abs().median()
    return 0.6745 * (values - median) / mad if mad > 0 else pd.Series(0.0, index=values.index)


def outliers(used: pd.DataFrame) -> dict:
    """The most extreme images by brightness or contrast, ranked, scored within their own split and class.

    Scored against the whole split, every image of a class acquired differently is an "outlier"
    (a sixth of a real MRI set was): that is a shortcut, which the shortcut section reports, and
    the list drowned the few images that are odd within their class."""
    found = []
    # Multi-label rows are grouped by their combination of labels.
    groups = used["label"].map(lambda label: str(row_label(label)))
    for _, rows in used.groupby([used["split"], groups], sort=False):
        scores = rows.assign(z_mean=robust_z(rows["mean"]), z_std=robust_z(rows["std"]))
        found.append(scores[(scores["z_mean"].abs() > OUTLIER_Z) | (scores["z_std"].abs() > OUTLIER_Z)])
    columns = ["row_id", "split", "label", "mean", "std", "z_mean", "z_std"]
    table = pd.concat(found)[columns] if found else pd.DataFrame(columns=columns)
    table = table.assign(worst=table[["z_mean", "z_std"]].abs().max(axis=1)).sort_values("worst", ascending=False)
    return {"count": len(table), "by_split": _counts(table["split"]), "cut_off": OUTLIER_Z,
            "ranked": table.drop(columns="worst").round(3).head(OUTLIERS_RANKED).to_dict("records")}


def deduplicate(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Keep the first copy of an image within a split; drop train (and val) rows whose image is in a later split.

    Rows are marked, not deleted, so the manifest still accounts for every row of the data.
    """
    frame = frame.copy()
    used = frame["status"] == OK
    copies = used & frame.duplicated(subset=["split", "content_hash"], keep="first")
    frame.loc[copies, "status"] = "duplicate"
    frame.loc[copies, "message"] = "same pixels as an earlier row of its split (inspect --dedupe)"
    leaked = {}
    for split, later in (("train", ("val", "test")), ("val", ("test",))):
        later_hashes = set(frame.loc[(frame["status"] == OK) & frame["split"].isin(later), "content_hash"])
        leak = (frame["status"] == OK) & (frame["split"] == split) & frame["content_hash"].isin(later_hashes)
        frame.loc[leak, "status"] = "leak"
        frame.loc[leak, "message"] = f"same pixels as a row of {' or '.join(later)} (inspect --dedupe)"
        leaked[split] = int(leak.sum())
    return frame, {"duplicates_dropped": int(copies.sum()), "leaked_dropped": leaked}


def plot_inspection(report: dict, frame: pd.DataFrame, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (counts_axis, brightness_axis) = plt.subplots(1, 2, figsize=(11, 4))
    pd.DataFrame({split: summary["class_counts"] for split, summary in report["splits"].items()}).plot.bar(
        ax=counts_axis, rot=0)
    counts_axis.set(title="Images per class and split", ylabel="images")
    used = frame[frame["status"] == OK]
    for split in SPLITS:
        brightness_axis.hist(used.loc[used["split"] == split, "mean"], bins=40, alpha=0.5, label=split)
    brightness_axis.set(title="Mean brightness per image", xlabel="mean pixel value (0-255)", ylabel="images")
    brightness_axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def format_inspection(report: dict) -> str:
    names = report["class_names"]
    width = max(10, *(len(name) + 2 for name in names))
    lines = [f"{'split':<7}{'rows':>7}" + "".join(f"{name:>{width}}" for name in names)
             + f"{'imbalance':>11}{'unusable':>10}"]
    for split, summary in report["splits"].items():
        ratio = "n/a" if summary["imbalance_ratio"] is None else f"{summary['imbalance_ratio']:.2f}"
        lines.append(f"{split:<7}{summary['used']:>7}" + "".join(
            f"{summary['class_counts'][name]:>{width}}" for name in names)
            + f"{ratio:>11}{summary['rows'] - summary['used']:>10}")
    lines.append("sizes      " + _top(report["sizes"]))
    lines.append("modes      " + _top(report["modes"]))
    if "color" in report:
        lines.append(f"color      read as {report['color']['used']} (data.color {report['color']['setting']})")
    reasons = pd.Series([row["status"] for row in report["unusable"]], dtype=object).value_counts()
    lines.append(f"unusable   {len(report['unusable'])}" + "".join(f", {reason} {n}" for reason, n in reasons.items()))
    lines += [f"  {row['status']:<20} {row['message']}" for row in report["unusable"][:UNUSABLE_SHOWN]]
    if len(report["unusable"]) > UNUSABLE_SHOWN:
        lines.append(f"  ... {len(report['unusable']) - UNUSABLE_SHOWN} more in inspect.json")
    if report["warnings"]["count"]:
        lines.append(f"warnings   {report['warnings']['count']} rows used as stored: "
                     + ", ".join(f"{kind} {n}" for kind, n in report["warnings"]["by_kind"].items()))
    lines += [f"warning    {warning}" for warning in report.get("validation_warnings", [])]
    if report["ignored_files"]["count"]:
        lines.append(f"ignored    {report['ignored_files']['count']} files that are not images")
    lines.append("duplicates " + ", ".join(f"{split} {info['extra_copies']}"
                                           for split, info in report["duplicates_within_splits"].items())
                 + " (extra copies within a split)")
    lines.append("leakage    " + ", ".join(f"{pair} {info['images']}"
                                           for pair, info in report["duplicates_across_splits"].items())
                 + " (images in both splits)")
    lines.append(f"outliers   {report['outliers']['count']} (brightness or contrast, |robust z| > {OUTLIER_Z} "
                 "within their split and class)" + ("; the most extreme:" if report["outliers"]["ranked"] else ""))
    lines += [f"  {row['row_id']}  z brightness {row['z_mean']:+.1f}, contrast {row['z_std']:+.1f}"
              for row in report["outliers"]["ranked"][:OUTLIERS_SHOWN]]
    lines += format_shortcuts(report["shortcuts"])
    if "dedupe" in report:
        dedupe = report["dedupe"]
        lines.append(f"dedupe     dropped {dedupe['duplicates_dropped']} duplicates, "
                     f"{dedupe['leaked_dropped']['train']} leaked rows from train, "
                     f"{dedupe['leaked_dropped']['val']} from val; use it with "
                     f"--set data.manifest={dedupe['manifest']}")
    lines += [f"wrote      {path}" for path in report.get("written", [])]
    return "\n".join(lines)


def _top(counts: dict, limit: int = 5) -> str:
    shown = ", ".join(f"{key} {value}" for key, value in list(counts.items())[:limit])
    return shown + (f", ... ({len(counts) - limit} more)" if len(counts) > limit else "")


def default_out_dir(config) -> Path:
    return Path(config.output.dir) / f"inspect-{safe_filename(config.name)}"
