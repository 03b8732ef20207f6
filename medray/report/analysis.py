"""Error analysis a person can look at: the misclassified test images with their CAM overlays
(or the images themselves where a run has none), and whatever picture galleries the explain stage left in the run folder.

The explain stage records where it wrote each overlay (the `overlay_file` column of its maps
table); the report follows that record, and falls back to the plain layout
`<explain>/overlays/<true class>/<row id>.png` for runs whose maps have no such column.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
from PIL import Image

from medray.explain.gallery import EMPTY_GALLERIES
from medray.filenames import safe_filename
from medray.report.test_images import test_images

# Galleries larger than this are cut, most confident mistakes first: those are the instructive ones.
DEFAULT_EXAMPLES_PER_CLASS = 16
MAP_COLUMNS = ["row_id", "method", "target", "prediction", "overlay_file"]


def explain_dirs(run_dir: Path) -> list[Path]:
    """Folders of the run that hold explain output (overlays or galleries), e.g. `explain/`, `gradcam/`."""
    found = {path.parent for pattern in ("*/overlays", "*/galleries") for path in run_dir.glob(pattern)}
    return sorted(found)


def overlay_file(explain_dir: Path, true_class: str, row_id: str) -> Path:
    """The plain overlay layout: one picture per test row, in a folder per true class."""
    return explain_dir / "overlays" / safe_filename(true_class) / f"{safe_filename(str(row_id))}.png"


def recorded_overlays(explain_dir: Path) -> dict[str, Path]:
    """row_id -> the overlay of the predicted class's map, as the maps table records it (first method)."""
    maps = next((path for path in (explain_dir / "maps", explain_dir / "maps.parquet") if path.exists()), None)
    if maps is None:
        return {}
    dataset = ds.dataset(maps, format="parquet")
    if not set(MAP_COLUMNS) <= set(dataset.schema.names):
        return {}
    table = dataset.to_table(columns=MAP_COLUMNS).to_pandas()
    table = table[table["overlay_file"].notna()]
    if table.empty:
        return {}
    table = table[table["method"] == table["method"].iloc[0]]
    # The map of the predicted class shows why the model chose what it chose.
    table = table.assign(own=table["target"] == table["prediction"]).sort_values("own", ascending=False, kind="stable")
    first = table.drop_duplicates("row_id")
    return {str(row_id): explain_dir / "overlays" / relative for row_id, relative in zip(first["row_id"], first["overlay_file"])}


def find_overlays(run_dir: Path, rows: pd.DataFrame, class_names: list[str]) -> dict[str, str]:
    """row_id -> overlay path relative to the run folder, for the given rows that have one on disk."""
    found: dict[str, str] = {}
    for explain_dir in explain_dirs(run_dir):
        recorded = recorded_overlays(explain_dir)
        for row in rows.itertuples():
            row_id = str(row.row_id)
            path = recorded.get(row_id) or overlay_file(explain_dir, class_names[int(row.label)], row_id)
            if row_id not in found and path.is_file():
                found[row_id] = path.relative_to(run_dir).as_posix()
    return found


def misclassified_by_class(predictions: pd.DataFrame, class_names: list[str], run_dir: Path,
                           limit: int = DEFAULT_EXAMPLES_PER_CLASS, config: dict | None = None) -> list[dict]:
    """Per true class with mistakes: how many, and the most confident of them, each named by its
    own file name, with its CAM overlay or, where the run wrote none (explain disabled), a
    thumbnail of the test image itself (`config`: the run's, to read the image back)."""
    wrong = predictions[predictions["label"] != predictions["prediction"]]
    shown = pd.concat([wrong[wrong["label"] == index].sort_values("confidence", ascending=False).head(limit)
                       for index in range(len(class_names))])
    overlays = find_overlays(run_dir, shown, class_names)
    row_ids = shown["row_id"].astype(str).tolist()
    images = test_images(run_dir, config or {}, row_ids, thumbnails=set(row_ids) - set(overlays))
    groups = []
    for index, name in enumerate(class_names):
        mistakes = wrong[wrong["label"] == index]
        if mistakes.empty:
            continue
        examples = [{"row_id": str(row.row_id), "predicted": class_names[int(row.prediction)],
                     "confidence": float(row.confidence), "overlay": overlays.get(str(row.row_id)),
                     **images.get(str(row.row_id), {"name": str(row.row_id), "thumbnail": None})}
                    for row in shown[shown["label"] == index].itertuples()]
        groups.append({"class": name, "total": len(mistakes), "support": int((predictions["label"] == index).sum()),
                       "examples": examples})
    return groups


def picture_galleries(run_dir: Path) -> list[dict]:
    """The PNGs directly in an explain folder and every PNG under its `galleries/`, one gallery per
    folder, paths relative to the run."""
    galleries = []
    for explain_dir in explain_dirs(run_dir):
        root = explain_dir / "galleries"
        # The explain stage's own summary figures (e.g. checks.png) first, then its galleries.
        folders: dict[Path, list[Path]] = {explain_dir: sorted(explain_dir.glob("*.png"))} if any(explain_dir.glob("*.png")) else {}
        for picture in sorted(root.rglob("*.png")):
            folders.setdefault(picture.parent, []).append(picture)
        # Empty galleries are lines of text (medray.explain.gallery.EMPTY_GALLERIES), not pictures.
        for notes in sorted(root.rglob(EMPTY_GALLERIES)):
            folders.setdefault(notes.parent, [])
        galleries += [{"title": folder.relative_to(run_dir).as_posix(),
                       "pictures": [{"path": p.relative_to(run_dir).as_posix(), "caption": p.stem, "wide": is_wide(p)}
                                    for p in pictures],
                       "empty": (folder / EMPTY_GALLERIES).read_text().splitlines()
                       if (folder / EMPTY_GALLERIES).is_file() else []}
                      for folder, pictures in folders.items()]
    return galleries


def is_wide(picture: Path) -> bool:
    """A strip of panels (e.g. checks.png) gets the page's full width, or its text is unreadable."""
    with Image.open(picture) as image:  # reads the header only
        return image.width > 2 * image.height
