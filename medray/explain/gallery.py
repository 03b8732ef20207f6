"""Galleries per true class: what the model did well (correct, most confident first) and what it
did not (misclassified, most confident errors first), as grids of overlays with their labels."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import pyarrow.parquet as pq
from PIL import Image

from medray.filenames import safe_filename

COLUMNS = 4


def write_galleries(maps_dir: Path, overlay_dir: Path, class_names: list[str], out_dir: Path,
                    size: int) -> list[Path]:
    """Two grid PNGs per class from the first method's overlays of the predicted class's map."""
    frame = pq.read_table(maps_dir, columns=["row_id", "label", "prediction", "target", "confidence", "method",
                                              "layer", "overlay_file"]).to_pandas()
    if frame.empty:
        return []
    frame = frame[(frame["method"] == frame["method"].iloc[0]) & (frame["layer"] == frame["layer"].iloc[0])]
    if frame["row_id"].duplicated().any():  # several target classes per image: show the predicted one
        frame = frame[frame["target"] == frame["prediction"]]
    out_dir.mkdir(parents=True, exist_ok=True)
    method = frame["method"].iloc[0] if len(frame) else ""
    written = []
    for label, name in enumerate(class_names):
        rows = frame[frame["label"] == label].sort_values(["confidence", "row_id"], ascending=[False, True])
        for kind, chosen in (("correct", rows[rows["prediction"] == label]),
                             ("misclassified", rows[rows["prediction"] != label])):
            path = out_dir / f"{safe_filename(name)}-{kind}.png"
            plot_gallery(chosen.head(size), overlay_dir, class_names,
                         f"{name}: {kind} ({len(chosen)} of {len(rows)}), {method}, most confident first", path)
            written.append(path)
    return written


def plot_gallery(rows: pd.DataFrame, overlay_dir: Path, class_names: list[str], title: str, path: Path) -> None:
    count = max(1, len(rows))
    columns = min(COLUMNS, count)
    lines = -(-count // columns)
    figure, axes = plt.subplots(lines, columns, figsize=(2.6 * columns, 2.9 * lines + 0.5), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    if rows.empty:
        axes[0, 0].text(0.5, 0.5, "none", ha="center", va="center", fontsize=14)
    for axis, row in zip(axes.ravel(), rows.itertuples()):
        with Image.open(overlay_dir / row.overlay_file) as image:
            axis.imshow(image.convert("RGB"))
        colour = "darkgreen" if row.label == row.prediction else "darkred"
        axis.set_title(f"true {class_names[row.label]}\npred {class_names[row.prediction]} ({row.confidence:.2f})",
                       fontsize=8, color=colour)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
