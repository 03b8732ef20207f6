"""Images without labels - the inference side of the explain job: a folder of images or DICOM
files without class subfolders, or parquet files without a label column.

Every row becomes a read task of the "test" split with label -1, in the same piece shape as
`medray.data.sources`, so the same readers decode it; what a row's class is, the model says.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq

from medray import storage
from medray.data.sources import SPLITS, Source, _is_image_name, _missing, _paths, parquet_files
from medray.errors import MedrayError

UNLABELLED = -1


def _local_paths(data_config) -> list[Path]:
    """data.path as local paths: images without labels are read from a local or mounted folder."""
    paths = _paths(data_config)
    remote = [path for path in paths if storage.is_uri(path)]
    if remote:
        raise MedrayError(f"data.path {remote[0]}: images without labels are read from a local or mounted "
                          "folder for now; copy them there (labelled data can stay in object storage)")
    return [Path(path) for path in paths]


def has_labels(data_config) -> bool:
    """data.labelled, or when unset: whether the parquet files have data.label_column, or whether
    the folder keeps its images in subfolders (classes) rather than directly inside it."""
    if data_config.labelled is not None:
        return data_config.labelled
    _local_paths(data_config)
    if data_config.source == "parquet":
        return any(data_config.label_column in pq.ParquetFile(file).schema_arrow.names
                   for file in parquet_files(data_config))
    if data_config.source == "folders":
        root = _local_paths(data_config)[0]
        if not root.is_dir():
            raise _missing(root)
        return not any(child.is_file() and _is_image_name(child) for child in root.iterdir())
    return True


def discover_unlabelled(data_config, class_names: list[str]) -> Source:
    """All rows of data.path as the test split, label -1; `where` of each row in `row_sources`."""
    if data_config.source == "parquet":
        root, pieces = _parquet_pieces(data_config)
    elif data_config.source == "folders":
        root, pieces = _folder_pieces(data_config)
    else:
        raise MedrayError(f"data.source={data_config.source}: images without labels come as a folder "
                          "(data.source: folders) or parquet files (data.source: parquet)")
    if not pieces:
        raise MedrayError(f"data.path {data_config.path}: no images found (.png, .jpg, .jpeg, .dcm or DICOM "
                          "files without a suffix)")
    return Source(data_config.source, root, list(class_names), {split: pieces if split == "test" else []
                                                                 for split in SPLITS})


def usable_unlabelled(source: Source, data_config, manifest_path: Path) -> tuple[Source, int]:
    """The rows that decode, after one pass over all of them (the run's manifest); unusable rows
    stop the job in one line naming the first, or with data.on_bad_image: skip are left out and
    counted. Returns the usable source and the number of rows left out."""
    from medray.data.manifest import OK, enforce_policy, load_or_build_manifest, usable_pieces

    frame = load_or_build_manifest(source, data_config, manifest_path)
    enforce_policy(frame, data_config.on_bad_image)
    pieces = usable_pieces(frame)
    if not pieces["test"]:
        raise MedrayError(f"data.path {data_config.path}: none of the {len(frame)} images can be decoded "
                          f"(see {manifest_path})")
    return replace(source, pieces=pieces), int((frame["status"] != OK).sum())


def row_sources(source: Source) -> dict[str, str]:
    """row_id -> the file (and parquet row) it was read from, for predictions.parquet."""
    where = {}
    for piece in source.pieces["test"]:
        for position, row_id in zip(piece["rows"], piece["row_ids"]):
            where[row_id] = (piece["file"] if source.kind == "folders"
                             else f"{piece['file']} row {piece['offset'] + position}")
    return where


def _folder_pieces(data_config) -> tuple[Path, list[dict]]:
    paths = _local_paths(data_config)
    if len(paths) != 1 or not paths[0].is_dir():
        raise _missing(paths[0]) if not paths[0].exists() else MedrayError(
            f"data.path {data_config.path}: data.source folders needs one folder")
    root = paths[0]
    # DICOM series are often stored as files without a suffix; decoding tells them from other files.
    files = sorted(file for file in root.rglob("*") if file.is_file() and not file.name.startswith(".")
                   and (_is_image_name(file) or not file.suffix))
    return root, [{"file": str(file), "part": 0, "offset": 0, "rows": [0],
                   "row_ids": [file.relative_to(root).as_posix()], "labels": [UNLABELLED], "split": "test"}
                  for file in files]


def _parquet_pieces(data_config) -> tuple[Path, list[dict]]:
    files = [Path(file) for file in parquet_files(data_config)]
    root = Path(os.path.commonpath([file.parent for file in files]))
    column = data_config.path_column or data_config.image_column
    pieces = []
    for file in files:
        metadata = pq.ParquetFile(file)
        if column not in metadata.schema_arrow.names:
            key = "data.path_column" if data_config.path_column else "data.image_column"
            raise MedrayError(f"{file}: no column {column!r} (columns: {', '.join(metadata.schema_arrow.names)}); "
                              f"set {key} to the right name")
        name, offset = file.relative_to(root).as_posix(), 0
        for group in range(metadata.num_row_groups):
            rows = metadata.metadata.row_group(group).num_rows
            pieces.append({"file": str(file), "part": group, "offset": offset, "rows": list(range(rows)),
                           "row_ids": [f"{name}#{offset + n}" for n in range(rows)],
                           "labels": [UNLABELLED] * rows, "split": "test"})
            offset += rows
    return root, pieces
