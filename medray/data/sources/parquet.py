"""Parquet files named by split (train-*.parquet, val-*, test-*): an image column (bytes or a
Hugging Face image struct) or a column of image file paths, a label column, optionally a mask
column. One read task per row group."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from medray import storage
from medray.data.sources.base import (MISSING_FILE, NO_IMAGE, SPLITS, UNLABELLED, RawRow, Source, SourceKind,
                                      data_paths, labelled_source, missing_path, path_type, piece_of_rows, split_of)
from medray.data.sources.registry import register
from medray.errors import BadImage, MedrayError

class ParquetSource(SourceKind):
    name = "parquet"
    layout = "<path>/train-*.parquet, val-*.parquet and test-*.parquet"
    suffixes = (".parquet",)

    def discover(self, data_config) -> Source:
        files = parquet_files(data_config)
        root = storage.common_parent(files)
        image_column = data_config.path_column or data_config.image_column
        tables = {}
        for file in files:
            split = split_of(storage.name(file))
            if split is None:
                raise MedrayError(
                    f"{file}: cannot tell its split from the file name; name parquet files "
                    "train-*.parquet, val-*.parquet (or validation-*) and test-*.parquet")
            metadata = storage.parquet_file(file)
            names = metadata.schema_arrow.names
            for column, key in ((image_column, "data.path_column" if data_config.path_column else "data.image_column"),
                                (data_config.label_column, "data.label_column")):
                if column not in names:
                    raise MedrayError(f"{file}: no column {column!r} (columns: {', '.join(names)}); set {key} "
                                      "to the right name")
            tables[file] = (split, metadata, metadata.read(columns=[data_config.label_column]).column(0).to_pylist())
        class_names = data_config.class_names or _class_names(tables, data_config.label_column)
        labeller = self.labeller(class_names, data_config)
        pieces: dict[str, list[dict]] = {split: [] for split in SPLITS}
        for file, (split, metadata, values) in tables.items():
            name = storage.relative(file, root)
            offset = 0
            for group in range(metadata.num_row_groups):
                rows = metadata.metadata.row_group(group).num_rows
                numbers = range(offset, offset + rows)
                row_ids = [f"{name}#{number}" for number in numbers]
                labels = labeller.rows(values[offset:offset + rows], row_ids, [f"{file} row {n}" for n in numbers],
                                       split)
                piece = piece_of_rows(file, group, list(range(rows)), row_ids, labels, split, offset)
                pieces[split] += [piece] if piece else []
                offset += rows
        has_masks = data_config.mask_column is not None and all(
            data_config.mask_column in metadata.schema_arrow.names for _, metadata, _ in tables.values())
        return labelled_source(self, root, class_names, pieces, labeller, has_masks=has_masks)

    def rows(self, piece: dict, settings: dict) -> Iterator[RawRow]:
        file = str(piece["file"])
        path_column, mask_column = settings["path_column"], settings["mask_column"]
        column = path_column or settings["image_column"]
        columns = [column, *([mask_column] if mask_column else [])]
        table = storage.parquet_file(file).read_row_group(int(piece["part"]), columns=columns).take(
            np.asarray(piece["rows"], dtype=np.int64))
        images = table.column(column).to_pylist()
        masks = table.column(mask_column).to_pylist() if mask_column else [None] * len(images)
        for position, image, mask, row_id, label in zip(piece["rows"], images, masks, piece["row_ids"],
                                                        piece["labels"]):
            where = f"{file} row {int(piece['offset']) + int(position)}"
            content = _read_linked(file, image, where) if path_column else stored_image(file, image, where)
            yield RawRow(str(row_id), int(label), where, content, _blob(mask) if mask_column else None,
                         name=_file_name(image, linked=bool(path_column)))

    def holds(self, folder: Path) -> bool:
        return next(folder.rglob("*.parquet"), None) is not None

    def has_labels(self, data_config) -> bool:
        """Whether the parquet files have data.label_column."""
        return any(data_config.label_column in pq.ParquetFile(file).schema_arrow.names
                   for file in parquet_files(data_config))

    def unlabelled_pieces(self, data_config) -> tuple[Path, list[dict]]:
        files = [Path(file) for file in parquet_files(data_config)]
        root = Path(os.path.commonpath([file.parent for file in files]))
        column = data_config.path_column or data_config.image_column
        pieces = []
        for file in files:
            metadata = pq.ParquetFile(file)
            if column not in metadata.schema_arrow.names:
                key = "data.path_column" if data_config.path_column else "data.image_column"
                raise MedrayError(f"{file}: no column {column!r} (columns: "
                                  f"{', '.join(metadata.schema_arrow.names)}); set {key} to the right name")
            name, offset = file.relative_to(root).as_posix(), 0
            for group in range(metadata.num_row_groups):
                rows = metadata.metadata.row_group(group).num_rows
                pieces.append({"file": str(file), "part": group, "offset": offset, "rows": list(range(rows)),
                               "row_ids": [f"{name}#{offset + n}" for n in range(rows)],
                               "labels": [UNLABELLED] * rows, "split": "test"})
                offset += rows
        return root, pieces


def parquet_files(data_config) -> list[str]:
    files = []
    for path in data_paths(data_config):
        if glob.has_magic(path):
            matches = storage.glob(path, "data.path")
            if not matches:
                raise MedrayError(f"data.path {path}: the pattern matches no file")
            files += [match for match in matches if match.endswith(".parquet")]
        elif (kind := path_type(path)) == pafs.FileType.Directory:
            files += [file for file, _ in storage.list_files(path, "data.path") if file.endswith(".parquet")]
        elif kind == pafs.FileType.File:
            files.append(path)
        else:
            raise missing_path(path)
    if not files:
        raise MedrayError(f"data.path {data_config.path}: no .parquet files found")
    return list(dict.fromkeys(files))


def _class_names(tables: dict, label_column: str) -> list[str]:
    values = [value for _, _, labels in tables.values() for value in labels if value is not None]
    if values and all(isinstance(value, str) for value in values):
        return sorted(set(values))  # string labels name their classes
    if any(isinstance(value, str) for value in values):
        raise MedrayError(f"data.label_column {label_column!r} mixes strings and numbers; use one kind")
    for _, metadata, _ in tables.values():
        names = _huggingface_class_names(metadata, label_column)
        if names:
            return names
    integers = [value for value in values if isinstance(value, int) and not isinstance(value, bool)]
    if len(integers) != len(values):
        bad = next(value for value in values if value not in integers)
        raise MedrayError(f"data.label_column {label_column!r}: label {bad!r} is neither a class index nor "
                          "a class name")
    return [f"class_{index}" for index in range(max(integers, default=0) + 1)]


def _huggingface_class_names(metadata: pq.ParquetFile, label_column: str) -> list[str] | None:
    schema_metadata = metadata.schema_arrow.metadata or {}
    if b"huggingface" not in schema_metadata:
        return None
    features = json.loads(schema_metadata[b"huggingface"]).get("info", {}).get("features", {})
    return features.get(label_column, {}).get("names")


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


register(ParquetSource())
