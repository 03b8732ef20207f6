"""Parquet files named by split (train-*.parquet, val-*, test-*): an image column (bytes or a
Hugging Face image struct) or a column of image file paths, a label column, optionally a mask
column. One read task per row group.

A label column of lists holds several labels per image (multi-label): a list of label names
(list<string>, empty = no finding) or a multi-hot list of K values 1/0/-1 (list<int>). The names
come from data.class_names, else the Hugging Face features (Sequence or List of ClassLabel), else
the sorted names seen (label_0... for multi-hot). data.mask_columns then gives one mask column per
label.
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from medray import storage
from medray.data.sources.base import (MISSING_FILE, NO_IMAGE, SPLITS, UNLABELLED, RawRow, Source, SourceKind,
                                      data_paths, labelled_source, missing_path, path_type, piece_of_rows, row_label,
                                      split_of)
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
        multi_label = any(_is_list(metadata.schema_arrow.field(data_config.label_column).type)
                          for _, metadata, _ in tables.values())
        class_names = data_config.class_names or (_label_names(tables, data_config.label_column) if multi_label
                                                  else _class_names(tables, data_config.label_column))
        labeller = self.labeller(class_names, data_config, multi_label)
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
        mask_columns = ([data_config.mask_column] if data_config.mask_column and not data_config.mask_columns
                        else list(_mask_columns(data_config, class_names, multi_label).values()))
        has_masks = bool(mask_columns) and all(column in metadata.schema_arrow.names for column in mask_columns
                                               for _, metadata, _ in tables.values())
        return labelled_source(self, root, class_names, pieces, labeller, has_masks=has_masks)

    def rows(self, piece: dict, settings: dict) -> Iterator[RawRow]:
        file = str(piece["file"])
        path_column, mask_column = settings["path_column"], settings["mask_column"]
        per_label = settings.get("mask_columns") or []
        column = path_column or settings["image_column"]
        mask_names = [name for name in dict.fromkeys([mask_column, *per_label]) if name]
        table = storage.parquet_file(file).read_row_group(int(piece["part"]), columns=[column, *mask_names]).take(
            np.asarray(piece["rows"], dtype=np.int64))
        images = table.column(column).to_pylist()
        cells = {name: table.column(name).to_pylist() for name in mask_names}
        for index, (position, image, row_id, label) in enumerate(zip(piece["rows"], images, piece["row_ids"],
                                                                     piece["labels"])):
            where = f"{file} row {int(piece['offset']) + int(position)}"
            content = _read_linked(file, image, where) if path_column else stored_image(file, image, where)
            mask = ([_blob(cells[name][index]) if name else None for name in per_label] if per_label
                    else _blob(cells[mask_column][index]) if mask_column else None)
            yield RawRow(str(row_id), row_label(label), where, content, mask,
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
    """The names of a ClassLabel feature, or of the ClassLabel inside a list feature: `datasets`
    writes Sequence(ClassLabel) as {"_type": "Sequence", "feature": {...}}, its newer List as
    {"_type": "List", "feature": {...}}, and a plain Python list of a feature as [{...}]."""
    schema_metadata = metadata.schema_arrow.metadata or {}
    if b"huggingface" not in schema_metadata:
        return None
    feature = json.loads(schema_metadata[b"huggingface"]).get("info", {}).get("features", {}).get(label_column, {})
    if isinstance(feature, list) and len(feature) == 1:
        feature = feature[0]
    if isinstance(feature, dict) and feature.get("_type") in ("Sequence", "List", "LargeList"):
        feature = feature.get("feature", {})
    return feature.get("names") if isinstance(feature, dict) else None


def _is_list(arrow_type: pa.DataType) -> bool:
    return pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type)


def _label_names(tables: dict, label_column: str) -> list[str]:
    """The K label names of a multi-label column without data.class_names (see the module docstring)."""
    for _, metadata, _ in tables.values():
        names = _huggingface_class_names(metadata, label_column)
        if names:
            return list(names)
    values = [item for _, _, labels in tables.values() for value in labels if value for item in value]
    if any(isinstance(item, str) for item in values):
        return sorted({item for item in values if isinstance(item, str)})
    width = next((len(value) for _, _, labels in tables.values() for value in labels if value), 0)
    return [f"label_{index}" for index in range(width)]


def _mask_columns(data_config, class_names: list[str], multi_label: bool) -> dict[str, str]:
    """data.mask_columns, checked against the label names: label -> its mask column."""
    columns = data_config.mask_columns or {}
    if columns and not multi_label:
        raise MedrayError(f"data.mask_columns: data.label_column {data_config.label_column!r} holds one class "
                          "per image; one mask per label is for multi-label data, use data.mask_column")
    unknown = [name for name in columns if name not in class_names]
    if unknown:
        raise MedrayError(f"data.mask_columns: {unknown[0]!r} is not one of the labels ({', '.join(class_names)})")
    return columns


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
