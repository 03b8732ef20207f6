"""Galleries per true class: what the model did well (correct, most confident first) and what it
did not (misclassified, most confident errors first), as grids of overlays with their labels.

An image of the checks' sample also shows its test-time augmentation figures
(medray.explain.uncertainty) in its caption: the predictive entropy H in bits and the map's
spread (mean per-pixel SD across the passes)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from PIL import Image

from medray.filenames import safe_filename

COLUMNS = 4
# Galleries with no image are one line each in this file, not a picture of the word "none".
EMPTY_GALLERIES = "empty.txt"
COLUMNS_READ = ["row_id", "label", "prediction", "target", "confidence", "method", "layer", "overlay_file"]


def write_galleries(maps_dir: Path, overlay_dir: Path, task, out_dir: Path, size: int,
                    sample_checks: Path | None = None) -> list[Path]:
    """Two grid PNGs per class (or label, for a multi-label task: medray.task says which maps and
    groups) from the first method's overlays of the predicted class's map (one, of the images
    predicted as that class, for unlabelled images).

    Shards are read one at a time, keeping only the `size` most confident rows of each gallery.
    A gallery without images (no misclassified image of a class) gets no picture but one line in
    `EMPTY_GALLERIES`, which the report shows as text. `sample_checks`: the sample's table
    (sample_checks.parquet), whose entropy and map spread join the captions of the images it holds.
    """
    shards = sorted(maps_dir.glob("part-*.parquet"))
    if not shards:
        return []
    first = pq.read_table(shards[0], columns=["method", "layer"]).slice(0, 1).to_pylist()[0]
    candidates = counts = None
    for shard in shards:
        rows = pq.read_table(shard, columns=COLUMNS_READ).to_pandas()
        rows = rows[(rows["method"] == first["method"]) & (rows["layer"] == first["layer"])]
        # several target classes per image: the task says which maps to show
        rows = rows[task.gallery_maps(rows["label"].to_numpy(), rows["prediction"].to_numpy(),
                                      rows["target"].to_numpy(), rows["row_id"].duplicated(keep=False).to_numpy())]
        rows = with_gallery_groups(rows, task)
        merged = rows if candidates is None else pd.concat([candidates, rows])
        candidates = (merged.sort_values(["confidence", "row_id"], ascending=[False, True])
                      .groupby(["group_class", "group"], sort=False).head(size))
        totals = rows.groupby(["group_class", "group"]).size()
        counts = totals if counts is None else counts.add(totals, fill_value=0)
    frame, method, class_names = with_uncertainty(candidates, sample_checks), first["method"], list(task.class_names)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, empty = [], []
    labelled = any(group != "predicted" for _, group in counts.index)
    for index, name in enumerate(class_names):
        rows = frame[frame["group_class"] == index].sort_values(["confidence", "row_id"], ascending=[False, True])
        in_class = int(sum(counts.get((index, group), 0) for group in ("correct", "misclassified")))
        groups = ["correct", "misclassified"] if labelled else []
        for group in groups + (["predicted"] if counts.get((index, "predicted")) else []):
            path = out_dir / f"{safe_filename(name)}-{group}.png"
            title = (f"predicted {name} ({int(counts[(index, group)])} unlabelled images)" if group == "predicted" else
                     f"{name}: {group} ({int(counts.get((index, group), 0))} of {in_class})")
            shown = rows[rows["group"] == group].head(size)
            if shown.empty:
                empty.append(f"{title}: no images")
                path.unlink(missing_ok=True)  # a picture of an earlier run into the same folder
                continue
            plot_gallery(shown, overlay_dir, task, f"{title}, {method}, most confident first", path)
            written.append(path)
    notes = out_dir / EMPTY_GALLERIES
    if empty:
        notes.write_text("\n".join(empty) + "\n")
    else:
        notes.unlink(missing_ok=True)
    return written


def with_uncertainty(rows: pd.DataFrame, sample_checks: Path | None) -> pd.DataFrame:
    """`rows` with `entropy` and `map_spread` (NaN for an image outside the sample), joined on the
    image, method, layer and class explained."""
    keys = ["row_id", "method", "layer", "target"]
    if sample_checks is None or not sample_checks.is_file():
        return rows.assign(entropy=np.nan, map_spread=np.nan)
    sample = pq.read_table(sample_checks).to_pandas()
    if "map_spread" not in sample:  # a sample table written before test-time augmentation
        return rows.assign(entropy=np.nan, map_spread=np.nan)
    sample = sample[keys + ["entropy", "map_spread"]].drop_duplicates(keys)
    sample["target"] = sample["target"].astype(rows["target"].dtype)
    return rows.merge(sample, on=keys, how="left")


def tile_captions(rows: pd.DataFrame, task) -> list[tuple[str, bool | None]]:
    """(caption, right or None) per row: the task's caption, and for an image of the checks' sample
    (`with_uncertainty`) a line "H <entropy> bits, spread <map spread>"."""
    captions = []
    for row in rows.itertuples():
        caption, right = task.gallery_caption(int(row.label), int(row.prediction), int(row.target), row.confidence)
        if not np.isnan(row.map_spread):
            caption += f"\nH {row.entropy:.2f} bits, spread {row.map_spread:.3f}"
        captions.append((caption, right))
    return captions


def with_gallery_groups(rows: pd.DataFrame, task) -> pd.DataFrame:
    """Each map's gallery class and group (correct, misclassified, predicted), as the task files them."""
    group_class, group = task.gallery_groups(rows["label"].to_numpy(), rows["prediction"].to_numpy(),
                                             rows["target"].to_numpy())
    return rows.assign(group=group, group_class=group_class)


def plot_gallery(rows: pd.DataFrame, overlay_dir: Path, task, title: str, path: Path) -> None:
    count = max(1, len(rows))
    columns = min(COLUMNS, count)
    lines = -(-count // columns)
    caption_height = 0.15 if rows["map_spread"].notna().any() else 0.0  # room for the uncertainty line
    figure, axes = plt.subplots(lines, columns, figsize=(2.6 * columns, (2.9 + caption_height) * lines + 0.5),
                                squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, row, (caption, right) in zip(axes.ravel(), rows.itertuples(), tile_captions(rows, task)):
        with Image.open(overlay_dir / row.overlay_file) as image:
            axis.imshow(image.convert("RGB"))
        colour = "black" if right is None else "darkgreen" if right else "darkred"
        axis.set_title(caption, fontsize=8, color=colour)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
