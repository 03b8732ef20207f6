"""Find a dataset's splits, classes and rows on disk, before any Ray work starts.

Discovery reads only listings and parquet metadata plus the label column, so a missing path, an
empty split or a single class stops the run in a second with a sentence, not in a Ray worker.
Each split becomes a list of read tasks ("pieces"): one parquet row group, or one image file.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from medray.errors import MedrayError

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "test": "test", "testing": "test"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
# MedMNIST arrays are read in chunks of this many rows, one Ray task each.
NPZ_ROWS_PER_PIECE = 1024


@dataclass(frozen=True)
class Source:
    kind: str
    path: Path
    class_names: list[str]
    # split -> read tasks; a task is a small dict that Ray Data ships to a reader
    pieces: dict[str, list[dict]]
    # split -> rows per class, in class_names order
    class_counts: dict[str, list[int]] = field(default_factory=dict)
    # whether rows carry ground-truth lesion masks (the parquet has data.mask_column)
    has_masks: bool = False

    def num_rows(self, split: str) -> int:
        return sum(self.class_counts[split])


def discover(data_config) -> Source:
    path = Path(data_config.path)
    if not path.exists():
        raise MedrayError(
            f"data.path {path} does not exist; create the demo data with `medray data synth "
            f"--out {path.parent if path.name in ('parquet', 'folders') else path}` or point data.path at your dataset"
        )
    discover_kind = {"parquet": _discover_parquet, "folders": _discover_folders, "npz": _discover_npz}
    source = discover_kind[data_config.source](path, data_config)
    _check_usable(source)
    return source


def split_of(name: str) -> str | None:
    """`train-00000-of-00001.parquet` -> train; `validation` -> val; unknown -> None."""
    stem = name.split(".")[0]
    for separator in ("-", "_"):
        stem = stem.split(separator)[0]
    return SPLIT_ALIASES.get(stem.lower())


def _discover_parquet(path: Path, data_config) -> Source:
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    pieces: dict[str, list[dict]] = {split: [] for split in SPLITS}
    labels: dict[str, list[int]] = {split: [] for split in SPLITS}
    class_names = data_config.class_names
    has_masks = bool(files) and data_config.mask_column is not None
    for file in files:
        split = split_of(file.name)
        if split is None:
            raise MedrayError(
                f"{file}: cannot tell its split from the file name; name parquet files "
                "train-*.parquet, val-*.parquet (or validation-*) and test-*.parquet"
            )
        metadata = pq.ParquetFile(file)
        names = metadata.schema_arrow.names
        for column in (data_config.image_column, data_config.label_column):
            if column not in names:
                raise MedrayError(
                    f"{file}: no column {column!r} (columns: {', '.join(names)}); set "
                    "data.image_column / data.label_column to the right names"
                )
        has_masks = has_masks and data_config.mask_column in names
        class_names = class_names or _huggingface_class_names(metadata, data_config.label_column)
        offset = 0
        for group in range(metadata.num_row_groups):
            rows = metadata.metadata.row_group(group).num_rows
            pieces[split].append({"file": str(file), "row_group": group, "first_row": offset})
            offset += rows
        file_labels = metadata.read(columns=[data_config.label_column]).column(0)
        labels[split].extend(_integer_labels(file, file_labels.to_pylist()))
    if class_names is None:
        largest = max((max(split_labels) for split_labels in labels.values() if split_labels), default=0)
        class_names = [f"class_{index}" for index in range(largest + 1)]
    counts = {split: _count(labels[split], class_names, path) for split in SPLITS}
    return Source("parquet", path, list(class_names), pieces, counts, has_masks)


def _huggingface_class_names(metadata: pq.ParquetFile, label_column: str) -> list[str] | None:
    schema_metadata = metadata.schema_arrow.metadata or {}
    if b"huggingface" not in schema_metadata:
        return None
    features = json.loads(schema_metadata[b"huggingface"]).get("info", {}).get("features", {})
    return features.get(label_column, {}).get("names")


def _integer_labels(file: Path, values: list) -> list[int]:
    for row, value in enumerate(values):
        if not isinstance(value, int) or isinstance(value, bool):
            raise MedrayError(
                f"{file} row {row}: label {value!r} is not an integer class index; "
                "medray reads integer labels with class names from the Hugging Face metadata or data.class_names"
            )
    return values


def _count(labels: list[int], class_names: list[str], path: Path) -> list[int]:
    counter = Counter(labels)
    unknown = sorted(label for label in counter if not 0 <= label < len(class_names))
    if unknown:
        raise MedrayError(
            f"{path}: labels {unknown} have no class name (classes: {', '.join(class_names)}); "
            "fix the labels or list every class in data.class_names"
        )
    return [counter.get(index, 0) for index in range(len(class_names))]


def _discover_folders(path: Path, data_config) -> Source:
    class_dirs = {
        split: sorted(d for d in (path / split).iterdir() if d.is_dir())
        for split in SPLITS
        if (path / split).is_dir()
    }
    for alias, split in SPLIT_ALIASES.items():
        if split not in class_dirs and (path / alias).is_dir():
            class_dirs[split] = sorted(d for d in (path / alias).iterdir() if d.is_dir())
    found = sorted({d.name for dirs in class_dirs.values() for d in dirs})
    class_names = data_config.class_names or found
    pieces: dict[str, list[dict]] = {split: [] for split in SPLITS}
    counts: dict[str, list[int]] = {}
    for split in SPLITS:
        labels = []
        for class_dir in class_dirs.get(split, []):
            if class_dir.name not in class_names:
                raise MedrayError(
                    f"{class_dir}: folder is not one of data.class_names ({', '.join(class_names)})"
                )
            label = class_names.index(class_dir.name)
            for file in sorted(class_dir.iterdir()):
                if file.suffix.lower() in IMAGE_SUFFIXES:
                    pieces[split].append({"file": str(file), "label": label,
                                          "row_id": str(file.relative_to(path))})
                    labels.append(label)
        counts[split] = _count(labels, class_names, path)
    return Source("folders", path, list(class_names), pieces, counts)


def _discover_npz(path: Path, data_config) -> Source:
    """MedMNIST layout: train_images / train_labels, val_*, test_* in one .npz file."""
    pieces: dict[str, list[dict]] = {split: [] for split in SPLITS}
    labels: dict[str, list[int]] = {}
    # allow_pickle=False: an .npz may carry pickled objects, which would run code on load.
    with np.load(path, allow_pickle=False) as arrays:
        for split in SPLITS:
            for key in (f"{split}_images", f"{split}_labels"):
                if key not in arrays.files:
                    raise MedrayError(f"{path}: no array {key!r} (arrays: {', '.join(arrays.files)}); "
                                      "medray reads the MedMNIST layout train_/val_/test_images and _labels")
            split_labels = _load_array(arrays, f"{split}_labels", path)
            if split_labels.ndim > 1 and split_labels.shape[1] != 1:
                raise MedrayError(f"{path}: {split}_labels has shape {split_labels.shape}; medray trains "
                                  "single-label classifiers (one label per image)")
            labels[split] = [int(label) for label in split_labels.reshape(-1)]
            if len(arrays[f"{split}_images"]) != len(labels[split]):
                raise MedrayError(f"{path}: {split}_images and {split}_labels differ in length")
            for start in range(0, len(labels[split]), NPZ_ROWS_PER_PIECE):
                stop = min(start + NPZ_ROWS_PER_PIECE, len(labels[split]))
                pieces[split].append({"file": str(path), "split": split, "start": start, "stop": stop})
    largest = max((max(values) for values in labels.values() if values), default=0)
    class_names = data_config.class_names or [f"class_{index}" for index in range(largest + 1)]
    counts = {split: _count(labels[split], class_names, path) for split in SPLITS}
    return Source("npz", path, list(class_names), pieces, counts)


def _load_array(arrays, key: str, path: Path) -> np.ndarray:
    try:
        return arrays[key]
    except ValueError as error:  # object arrays need pickle, which medray never loads
        raise MedrayError(f"{path}: array {key!r} cannot be read safely ({error}); save it as numbers") from None


def _check_usable(source: Source) -> None:
    for split in SPLITS:
        if source.num_rows(split) == 0:
            layout = {"parquet": "<path>/train-*.parquet, val-*.parquet and test-*.parquet",
                      "folders": "<path>/<split>/<class>/*.png",
                      "npz": "<split>_images and <split>_labels arrays"}[source.kind]
            raise MedrayError(f"{source.path}: the {split} split has no images; medray expects {layout}")
    present = [name for name, count in zip(source.class_names, source.class_counts["train"]) if count]
    if len(present) < 2:
        raise MedrayError(
            f"{source.path}: the train split has only {len(present)} class ({', '.join(present)}); "
            "a classifier needs at least two"
        )
