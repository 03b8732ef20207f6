"""Error analysis of a multi-label run, label by label: the absent findings the model reported most
confidently (false positives) and the present findings it missed by the widest margin (false
negatives), each image shown by its CAM overlay for that label or, where the run has none, by a
thumbnail of the test image itself.

The overlay of (image, label k) is found through the explain stage's maps table: the row with that
row_id whose `target` is k (first method), as analysis.py reads it for single-label runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.dataset as ds

from medray.report.analysis import DEFAULT_EXAMPLES_PER_CLASS, explain_dirs
from medray.report.test_images import test_images

LABEL_MAP_COLUMNS = ["row_id", "method", "target", "overlay_file"]
NO_FINDING = "no finding"


def label_overlays(run_dir: Path) -> dict[tuple[str, int], str]:
    """(row_id, label index) -> overlay path relative to the run folder, for overlays on disk."""
    found: dict[tuple[str, int], str] = {}
    for explain_dir in explain_dirs(run_dir):
        maps = next((path for path in (explain_dir / "maps", explain_dir / "maps.parquet") if path.exists()), None)
        if maps is None:
            continue
        dataset = ds.dataset(maps, format="parquet")
        if not set(LABEL_MAP_COLUMNS) <= set(dataset.schema.names):
            continue
        table = dataset.to_table(columns=LABEL_MAP_COLUMNS).to_pandas()
        table = table[table["overlay_file"].notna()]
        if table.empty:
            continue
        table = table[table["method"] == table["method"].iloc[0]]
        for row in table.itertuples():
            path = explain_dir / "overlays" / row.overlay_file
            key = (str(row.row_id), int(row.target))
            if key not in found and path.is_file():
                found[key] = path.relative_to(run_dir).as_posix()
    return found


def errors_by_label(labels: np.ndarray, probabilities: np.ndarray, thresholds: np.ndarray, row_ids: list[str],
                    label_names: list[str], run_dir: Path, limit: int = DEFAULT_EXAMPLES_PER_CLASS,
                    config: dict | None = None) -> list[dict]:
    """Per label with mistakes: its false positives (highest probability first) and false negatives
    (lowest probability first), at most `limit` of each shown. labels (N, K) with 1/0/-1 (unknown
    entries are no mistake), probabilities (N, K), thresholds (K,), row_ids (N,). Each example has
    its overlay or thumbnail, or neither when the run's images cannot be read back."""
    predicted = probabilities >= thresholds
    chosen: list[tuple[str, np.ndarray, np.ndarray, int]] = []  # (label, false positives, false negatives, k)
    for k, name in enumerate(label_names):
        false_positive = np.flatnonzero((labels[:, k] == 0) & predicted[:, k])
        false_negative = np.flatnonzero((labels[:, k] == 1) & ~predicted[:, k])
        if len(false_positive) or len(false_negative):
            chosen.append((name, false_positive[np.argsort(-probabilities[false_positive, k], kind="stable")],
                           false_negative[np.argsort(probabilities[false_negative, k], kind="stable")], k))
    overlays = label_overlays(run_dir)
    shown = {(int(i), k) for _, fp, fn, k in chosen for i in (*fp[:limit], *fn[:limit])}
    wanted = sorted({row_ids[i] for i, _ in shown})
    without_overlay = {row_ids[i] for i, k in shown if (row_ids[i], k) not in overlays}
    images = test_images(run_dir, config or {}, wanted, thumbnails=without_overlay)

    def example(i: int, k: int) -> dict:
        present = [label_names[j] for j in np.flatnonzero(labels[i] == 1)]
        return {"row_id": row_ids[i], "probability": float(probabilities[i, k]),
                "true_labels": "|".join(present) or NO_FINDING, "overlay": overlays.get((row_ids[i], k)),
                **images.get(row_ids[i], {"name": row_ids[i], "thumbnail": None})}

    return [{"label": name, "threshold": float(thresholds[k]),
             "false_positives": {"total": len(fp), "examples": [example(i, k) for i in fp[:limit]]},
             "false_negatives": {"total": len(fn), "examples": [example(i, k) for i in fn[:limit]]}}
            for name, fp, fn, k in chosen]


def has_pictures(groups: list[dict]) -> bool:
    """Whether any example of the galleries can be shown as a picture."""
    return any(example["overlay"] or example["thumbnail"] for group in groups
               for kind in ("false_positives", "false_negatives") for example in group[kind]["examples"])

