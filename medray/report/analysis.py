"""Error analysis a person can look at: the misclassified test images with their CAM overlays,
and whatever picture galleries the explain stage left in the run folder."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medray.filenames import safe_filename

# Galleries larger than this are cut, most confident mistakes first: those are the instructive ones.
DEFAULT_EXAMPLES_PER_CLASS = 16


def overlay_file(explain_dir: Path, true_class: str, row_id: str) -> Path:
    """Where the explain stage writes the overlay of one test row (see medray.explain.bulk)."""
    return explain_dir / "overlays" / safe_filename(true_class) / f"{safe_filename(str(row_id))}.png"


def misclassified_by_class(predictions: pd.DataFrame, class_names: list[str], explain_dir: Path,
                           run_dir: Path, limit: int = DEFAULT_EXAMPLES_PER_CLASS) -> list[dict]:
    """Per true class with mistakes: how many, and the most confident of them with overlay paths
    relative to the run folder (None where the run wrote no overlay for that row)."""
    wrong = predictions[predictions["label"] != predictions["prediction"]]
    groups = []
    for index, name in enumerate(class_names):
        rows = wrong[wrong["label"] == index].sort_values("confidence", ascending=False)
        if rows.empty:
            continue
        examples = []
        for row in rows.head(limit).itertuples():
            overlay = overlay_file(explain_dir, name, row.row_id)
            examples.append({
                "row_id": str(row.row_id),
                "predicted": class_names[int(row.prediction)],
                "confidence": float(row.confidence),
                "overlay": overlay.relative_to(run_dir).as_posix() if overlay.is_file() else None,
            })
        groups.append({"class": name, "total": len(rows), "support": int((predictions["label"] == index).sum()),
                       "examples": examples})
    return groups


def picture_galleries(run_dir: Path, explain_dir: Path) -> list[dict]:
    """Every PNG under `<explain>/galleries/`, one gallery per folder, paths relative to the run."""
    root = explain_dir / "galleries"
    if not root.is_dir():
        return []
    folders: dict[Path, list[str]] = {}
    for picture in sorted(root.rglob("*.png")):
        folders.setdefault(picture.parent, []).append(picture.relative_to(run_dir).as_posix())
    return [{"title": folder.relative_to(root).as_posix() if folder != root else root.name,
             "pictures": [{"path": path, "caption": Path(path).stem} for path in pictures]}
            for folder, pictures in folders.items()]
