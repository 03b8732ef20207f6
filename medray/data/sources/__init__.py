"""Find a dataset's splits, classes and rows on disk, before any Ray work starts.

Discovery reads only listings and parquet metadata plus the label column, so a missing path, an
empty split or a single class stops the run in a second with a sentence, not in a Ray worker.
Each way of storing a dataset is one `SourceKind` (base.py) in a module of its own, registered
once (registry.py) under the name data.source gives it; nothing else compares that name. A new
kind is one new module and one import line below.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np

from medray import storage
from medray.data.sources.base import (SPLITS, RawRow, Source, SourceKind, count_labels, local_paths, missing_path,
                                      split_of)
from medray.data.sources.color import with_color
from medray.data.sources.registry import describe_kinds, get_source_kind, register, source_kind_names
from medray.data.sources.splits import carve_validation
from medray.errors import MedrayError

# The built-in kinds register themselves on import, in the order messages list them.
from medray.data.sources import parquet  # noqa: E402,F401,I001
from medray.data.sources import folders  # noqa: E402,F401,I001
from medray.data.sources import npz  # noqa: E402,F401,I001
from medray.data.sources import csv  # noqa: E402,F401,I001
from medray.data.sources import npz_volumes  # noqa: E402,F401,I001
from medray.data.sources import nifti  # noqa: E402,F401,I001
from medray.data.sources import dicom_series  # noqa: E402,F401,I001

__all__ = ["SPLITS", "RawRow", "Source", "SourceKind", "check_usable", "count_labels", "describe_kinds", "discover",
           "discover_unlabelled", "get_source_kind", "guess_kind", "has_labels", "register", "row_sources",
           "source_kind_names", "split_of"]


def discover(data_config) -> Source:
    """data.path as a Source of data.source's kind, its validation split carved out of train if
    data.split.val_from_train asks, its colour decided; raises MedrayError naming what is wrong."""
    source = get_source_kind(data_config.source).discover(data_config)
    if not data_config.class_names:  # names the user listed are kept apart as given
        check_spellings(source)
    if data_config.split.val_from_train:
        source = carve_validation(source, data_config.split.val_from_train, data_config.split.seed)
    check_usable(source)
    return with_color(source, data_config)


def check_usable(source: Source) -> None:
    """Every split has images; the train split has two classes and every class of the validation and
    test splits, or for multi-label data a positive image of every label (a label never present in
    train cannot be learned, and its positive weight and validation threshold would be made up)."""
    for split in SPLITS:
        if source.num_rows(split) == 0:
            raise MedrayError(f"{source.path}: the {split} split has no images; medray expects "
                              f"{get_source_kind(source.kind).layout}")
    if source.multi_label:
        absent = [name for name, count in zip(source.class_names, source.class_counts["train"]) if not count]
        if absent:
            raise MedrayError(f"{source.path}: no train image has label {absent[0]}"
                              + (f" (nor {', '.join(absent[1:])})" if absent[1:] else "")
                              + "; a label without positive examples cannot be learned: add images with it "
                              "or leave it out of data.class_names (data.label_columns for a CSV)")
        return
    present = [name for name, count in zip(source.class_names, source.class_counts["train"]) if count]
    if len(present) < 2:
        raise MedrayError(
            f"{source.path}: the train split has only {len(present)} class ({', '.join(present)}); "
            "a classifier needs at least two")
    for split in ("val", "test"):
        counts = zip(source.class_names, source.class_counts["train"], source.class_counts[split])
        unseen = [(name, count) for name, train, count in counts if count and not train]
        if unseen:
            name, count = unseen[0]
            raise MedrayError(f"{source.path}: class {name!r} has {count} {split} image{'s' * (count != 1)} but no "
                              "train image; a class never seen in training cannot be predicted: add train images "
                              "of it or fix the labels of those rows")


def check_spellings(source: Source) -> None:
    """Class names read from the data that differ only in spaces or case ("PNEUMONIA" and
    "PNEUMONIA ") are one class spelled twice, not two classes: stop, naming the rarer spelling and
    the first row that carries it."""
    spellings: dict[str, list[int]] = {}
    for index, name in enumerate(source.class_names):
        spellings.setdefault(" ".join(str(name).split()).casefold(), []).append(index)
    for indices in spellings.values():
        if len(indices) < 2:
            continue
        rows = [sum(source.class_counts[split][index] for split in SPLITS) for index in indices]
        usual, odd = indices[rows.index(max(rows))], indices[rows.index(min(rows))]
        usual, odd = (usual, odd) if usual != odd else indices[:2]
        raise MedrayError(f"{_first_row_of(source, odd)}: label {source.class_names[odd]!r} differs from label "
                          f"{source.class_names[usual]!r} only in spaces or case and would become a class of its "
                          "own; fix the label (or list both in data.class_names to keep them apart)")


def _first_row_of(source: Source, index: int) -> str:
    kind = get_source_kind(source.kind)
    for split in SPLITS:
        for piece in source.pieces[split]:
            for row, label in zip(piece["rows"], piece["labels"]):
                if (label == index) if np.ndim(label) == 0 else label[index] == 1:
                    return kind.row_source(piece, row)
    return str(source.path)


def guess_kind(path: Path) -> str:
    """The data.source that `path` holds, as `medray data inspect PATH` is typed: a file by its
    suffix (.npz, .parquet), a local folder by what it holds (parquet files anywhere below it, or
    (split and) class folders of PNG, JPEG or DICOM files), asking the kinds in registration order.

    Raises MedrayError naming the path when it is missing or holds none of these.
    """
    if storage.is_uri(str(path)):
        kind = _kind_by_suffix(PurePosixPath(str(path)).suffix)
        if kind is None:
            raise MedrayError(f"{path}: medray guesses the kind of local folders only; pass --source "
                              f"{describe_kinds()} with a URI")
        return kind
    path = Path(path)
    if not path.exists():
        raise missing_path(path)
    if path.is_file():
        kind = _kind_by_suffix(path.suffix)
        if kind is None:
            suffixes = " nor ".join(suffix for name in source_kind_names() for suffix in get_source_kind(name).suffixes)
            raise MedrayError(f"{path} is neither {suffixes}; for image files (PNG, JPEG, DICOM), "
                              "pass the folder that holds the class folders")
        return kind
    kind = next((name for name in source_kind_names() if get_source_kind(name).holds(path)), None)
    if kind is not None:
        return kind
    archives = sorted(path.glob("*.npz"))
    hint = f"; for MedMNIST arrays pass the file itself, e.g. {archives[0]}" if archives else ""
    raise MedrayError(f"{path} holds no .parquet files and no images (PNG, JPEG, DICOM) in class folders{hint}")


def _kind_by_suffix(suffix: str) -> str | None:
    return next((name for name in source_kind_names() if suffix.lower() in get_source_kind(name).suffixes), None)


def has_labels(data_config) -> bool:
    """data.labelled, or when unset: whether data.path carries labels (its kind says how: a label
    column, or images in class subfolders rather than directly inside the folder)."""
    if data_config.labelled is not None:
        return data_config.labelled
    local_paths(data_config)
    return get_source_kind(data_config.source).has_labels(data_config)


def discover_unlabelled(data_config, class_names: list[str]) -> Source:
    """All rows of data.path as the test split, label UNLABELLED, read in data.color as labelled rows
    are ("auto" decided from a sample of them); `where` of each row in `row_sources`."""
    root, pieces = get_source_kind(data_config.source).unlabelled_pieces(data_config)
    if not pieces:
        raise MedrayError(f"data.path {data_config.path}: no images found (.png, .jpg, .jpeg, .dcm or DICOM "
                          "files without a suffix)")
    return with_color(Source(data_config.source, root, list(class_names),
                             {split: pieces if split == "test" else [] for split in SPLITS}), data_config)


def row_sources(source: Source) -> dict[str, str]:
    """row_id -> the file (and parquet row) it was read from, for predictions.parquet."""
    kind = get_source_kind(source.kind)
    return {row_id: kind.row_source(piece, row) for piece in source.pieces["test"]
            for row, row_id in zip(piece["rows"], piece["row_ids"])}
