"""The test images themselves, for the report's error analysis: a thumbnail of each decoded image
and the name it has in the user's data (the Hugging Face struct's `path`, the image or DICOM file),
re-read through the run's manifest, which records where every row lives."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

from medray.config import RunConfig
from medray.data.decode import decode_row
from medray.data.readers import rows_of
from medray.data.volumes import flat_preview, resolve_window
from medray.errors import BadImage
from medray.filenames import safe_filename

THUMBNAIL_DIR = Path("plots") / "test_images"
# Pixels on the long side: a gallery tile is 150 px wide.
THUMBNAIL_SIDE = 160


def test_images(run_dir: Path, config: dict, row_ids: list[str], thumbnails: set[str]) -> dict[str, dict]:
    """row_id -> {"name": the image's own file name (or its row id), "thumbnail": path relative to
    the run folder, for the rows in `thumbnails` whose data can still be read, else None}. Empty
    when the run has no manifest (written before medray kept one) or no config."""
    manifest = run_dir / "manifest.parquet"
    if not row_ids or not manifest.is_file() or not config.get("data"):
        return {}
    data = RunConfig.model_validate(config).data
    # The manifest's `file`/`part`/`row` say where a row lives; its source kind comes from the config.
    settings = {"image_column": data.image_column, "path_column": data.path_column,
                "label_column": data.label_column, "mask_column": None, "max_pixels": data.max_image_pixels,
                "window": resolve_window(data.window), "source_path": str(data.path)}
    rows = pq.read_table(manifest, filters=[("row_id", "in", list(row_ids))]).to_pandas()
    found = {}
    for record in rows.itertuples():
        piece = {"file": record.file, "part": record.part, "offset": record.offset, "rows": [record.row],
                 "row_ids": [record.row_id], "labels": [record.label], "split": record.split}
        found[record.row_id] = {"name": str(record.row_id), "thumbnail": None}
        try:
            row = next(rows_of(data.source, piece, settings))
            found[record.row_id]["name"] = row.name or str(record.row_id)
            if record.row_id in thumbnails:
                pixels, mode = decode_row(row, data.max_image_pixels)
                found[record.row_id]["thumbnail"] = write_thumbnail(flat_preview(pixels, mode), run_dir,
                                                                    record.row_id)
        except (BadImage, OSError):  # the data moved or changed since the run: the row id must do
            pass
    return found


def write_thumbnail(pixels, run_dir: Path, row_id: str) -> str:
    relative = THUMBNAIL_DIR / f"{safe_filename(str(row_id))}.png"
    image = Image.fromarray(pixels)
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    if max(image.size) < THUMBNAIL_SIDE:  # tiny scans (28 px MedMNIST) are drawn big, not blurred
        scale = THUMBNAIL_SIDE / max(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.NEAREST)
    (run_dir / relative).parent.mkdir(parents=True, exist_ok=True)
    image.save(run_dir / relative)
    return relative.as_posix()
