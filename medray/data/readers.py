"""The rows of read tasks ("pieces", see sources.py) as raw content, inside Ray Data workers.

One generator per source kind yields `RawRow`s: the stored image (bytes, or an array for .npz),
where it came from, and its label. Two consumers share them: the pipeline decodes and resizes,
the manifest pass hashes and measures. Bad content is not judged here, only in decode.py.
`read_tasks` makes the Ray Dataset both start from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import ray
from ray.data import DataContext

from medray import storage
from medray.data.decode import decode_native
from medray.errors import BadImage


@dataclass(frozen=True)
class RawRow:
    row_id: str
    label: int
    # where the row lives, for messages: "<file> row 7" or the image file's path
    where: str
    # the stored image, or why it could not be read (raised when the row is decoded)
    content: bytes | np.ndarray | BadImage
    mask: bytes | None = None
    # the image's own file name, for people: the HF struct's `path`, the linked or folder file; None for arrays
    name: str | None = None


def pieces_of(batch: dict) -> Iterator[dict]:
    """A Ray Data batch of pieces (columns of arrays) back into one dict per piece."""
    for index in range(len(batch["file"])):
        yield {key: values[index] for key, values in batch.items()}


def parquet_rows(piece: dict, image_column: str, path_column: str | None, label_column: str,
                 mask_column: str | None) -> Iterator[RawRow]:
    file = str(piece["file"])
    column = path_column or image_column
    columns = [column, *([mask_column] if mask_column else [])]
    table = storage.parquet_file(file).read_row_group(int(piece["part"]), columns=columns).take(
        np.asarray(piece["rows"], dtype=np.int64))
    images = table.column(column).to_pylist()
    masks = table.column(mask_column).to_pylist() if mask_column else [None] * len(images)
    for position, image, mask, row_id, label in zip(piece["rows"], images, masks, piece["row_ids"], piece["labels"]):
        where = f"{file} row {int(piece['offset']) + int(position)}"
        content = _read_linked(file, image, where) if path_column else stored_image(file, image, where)
        yield RawRow(str(row_id), int(label), where, content, _blob(mask) if mask_column else None,
                     name=_file_name(image, linked=bool(path_column)))


def stored_image(parquet_file: str, value, where: str) -> bytes | BadImage:
    """An image cell: plain binary, or a Hugging Face image struct {bytes, path}.

    `datasets` keeps an image beside the parquet file as bytes null and a path (relative to the
    parquet file's folder, or absolute); the bytes are used when present, the file otherwise.
    """
    if isinstance(value, dict):
        if value.get("bytes") is None and value.get("path"):
            return _read_linked(parquet_file, value["path"], where)
        value = value.get("bytes")
    if value is None:
        return BadImage(f"{where}: the row holds no image (neither bytes nor a path); fill it or remove the row",
                        NO_IMAGE)
    return value


# Reasons a row is reported under, besides decode.py's.
MISSING_FILE = "missing file"
NO_IMAGE = "no image"


def _blob(value) -> bytes:
    """A mask cell: Hugging Face image struct {bytes, path} or plain binary."""
    if isinstance(value, dict):
        value = value.get("bytes")
    return value or b""


def linked_path(parquet_file: str, value: str) -> str:
    """Where an image path stored in a parquet file points: relative to that file's folder (local or
    in object storage), or absolute, or a URI. The one place such paths are resolved."""
    value = str(value)
    if storage.is_uri(value) or Path(value).is_absolute():
        return value
    return storage.join(storage.parent(parquet_file), value)


def _file_name(value, linked: bool) -> str | None:
    path = value.get("path") if isinstance(value, dict) else value if linked else None
    return Path(str(path)).name if path else None


def _read_linked(parquet_file: str, value, where: str) -> bytes | BadImage:
    if not value:
        return BadImage(f"{where}: the image path is empty; fill data.path_column", NO_IMAGE)
    path = linked_path(parquet_file, value)
    try:
        return storage.read_bytes(path)
    except OSError as error:
        reason = error.strerror or storage.first_line(error)
        return BadImage(f"{where}: cannot read image file {path} ({reason}); fix the path or the file",
                        MISSING_FILE)


def file_rows(piece: dict) -> Iterator[RawRow]:
    path = str(piece["file"])
    try:
        content = storage.read_bytes(path)
    except OSError as error:
        reason = error.strerror or storage.first_line(error)
        content = BadImage(f"{path}: cannot read the file ({reason})", MISSING_FILE)
    yield RawRow(str(piece["row_ids"][0]), int(piece["labels"][0]), path, content, name=Path(path).name)


def npz_rows(piece: dict) -> Iterator[RawRow]:
    file, split = str(piece["file"]), str(piece["split"])
    positions = np.asarray(piece["rows"], dtype=np.int64)
    with storage.open_input(file) as handle, np.load(handle, allow_pickle=False) as arrays:
        images = arrays[f"{split}_images"][positions]
    for position, image, row_id, label in zip(positions, images, piece["row_ids"], piece["labels"]):
        yield RawRow(str(row_id), int(label), f"{file} {split} row {position}", image)


def decode_row(row: RawRow, max_pixels: int, warnings: list[str] | None = None,
               color: str = "gray") -> tuple[np.ndarray, str]:
    """The row's image at its own size and stored mode; BadImage if it cannot be used; what was
    usable but odd (an EXIF orientation ignored) is appended to `warnings`."""
    if isinstance(row.content, BadImage):
        raise row.content
    return decode_native(row.content, max_pixels, row.where, warnings=warnings, color=color)


def rows_of(kind: str, piece: dict, settings: dict) -> Iterator[RawRow]:
    if kind == "parquet":
        return parquet_rows(piece, settings["image_column"], settings["path_column"], settings["label_column"],
                            settings["mask_column"])
    if kind == "npz":
        return npz_rows(piece)
    return file_rows(piece)


def reader_settings(source, data_config) -> dict:
    return {"kind": source.kind, "image_column": data_config.image_column,
            "path_column": data_config.path_column, "label_column": data_config.label_column,
            "mask_column": data_config.mask_column if source.has_masks else None,
            "max_pixels": data_config.max_image_pixels, "color": source.color}


# Parquet and .npz pieces hold hundreds of rows; image files are read a few dozen at a time.
FILES_PER_READ = 32


def pieces_per_batch(kind: str) -> int:
    return FILES_PER_READ if kind == "folders" else 1


def read_tasks(pieces: list[dict], kind: str, read_batch, fn_kwargs: dict) -> ray.data.Dataset:
    """A Ray Dataset whose tasks each run `read_batch` over a batch of pieces.

    Ray Data's per-operator resource reservation is turned off first: on a 2-CPU cluster it held
    a one-operator pipeline to one task at a time (`backpressured:tasks(ResourceBudget)`), so
    decoding used one core and ran at half the speed it has without the reservation. Ray's own
    scheduler still keeps tasks within the CPUs that training leaves free.
    """
    DataContext.get_current().op_resource_reservation_enabled = False
    items = ray.data.from_items(pieces, override_num_blocks=max(1, min(len(pieces), 64)))
    return items.map_batches(read_batch, batch_size=pieces_per_batch(kind), fn_kwargs=fn_kwargs)
