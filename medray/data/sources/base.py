"""What every source kind shares: the `Source` it discovers, the `RawRow`s it reads, the
`SourceKind` base whose hooks a kind overrides, and the helpers several kinds use.

Each split becomes a list of read tasks ("pieces"), one shape for every source:
`{file, part, offset, rows, row_ids, labels, split}` - a parquet row group (starting at row `offset`
of its file), a chunk of an .npz split or one image file, with the positions of its rows in that part
and their labels: class indices, or for multi-label data one list of K values per row (1 present,
0 absent, -1 unknown). Labels are resolved in one place, `Labeller` (`MultiLabeller` for several
labels per image), which a kind asks for through `SourceKind.labeller`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow.fs as pafs

from medray import storage
from medray.data.volumes import Volume, resolve_window
from medray.errors import BadImage, MedrayError

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "test": "test", "testing": "test"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm"}
UNKNOWN_LABEL = "unknown label"
# A multi-label row whose values are not 1, 0 or -1, or not one per label.
BAD_LABEL = "bad label"
# A multi-label entry neither present nor absent (CheXpert's uncertain), kept under data.uncertain: ignore.
UNCERTAIN = -1
# The label of a row without one (images to explain with a model trained elsewhere).
UNLABELLED = -1
# Reasons a row is reported under, besides decode.py's.
MISSING_FILE = "missing file"
NO_IMAGE = "no image"


@dataclass(frozen=True)
class Source:
    # the name its SourceKind is registered under (data.source)
    kind: str
    # a local path or a URI (s3://bucket/prefix): the pieces' files are locations of the same kind
    path: str
    class_names: list[str]
    # split -> read tasks; a task is a small dict that Ray Data ships to a reader
    pieces: dict[str, list[dict]]
    # split -> rows per class, in class_names order (multi-label: images with each label present)
    class_counts: dict[str, list[int]] = field(default_factory=dict)
    # whether rows carry ground-truth lesion masks (the parquet has data.mask_column, or the
    # data.mask_columns of a multi-label source: one mask per label)
    has_masks: bool = False
    # rows refused before decoding (unknown labels, with on_bad_image: skip): row_id, split, source, ...
    rejected: list[dict] = field(default_factory=list)
    # files in class folders that are not images (.DS_Store, notes.txt): ignored, but counted
    ignored_files: list[str] = field(default_factory=list)
    # how images are read: "gray" (H x W) or "rgb" (H x W x 3); data.color "auto" is decided in discover
    color: str = "gray"
    # whether a row's label is a vector of K labels (1, 0, -1) rather than one class index
    multi_label: bool = False
    # rows of the dataset's own validation split left unread: data.split.val_from_train carves one from train
    discarded_val_rows: int = 0
    # spatial axes of its rows: 2 for images (H, W), 3 for volumes (D, H, W); the model must match.
    # Its kind's, or for a kind that lists files of either (a CSV), what its files are.
    spatial_dims: int = 2

    def num_rows(self, split: str) -> int:
        # Counted from the read tasks: a multi-label image adds to several label counts or to none.
        return sum(len(piece["rows"]) for piece in self.pieces[split])


@dataclass(frozen=True)
class RawRow:
    row_id: str
    # a class index, or a multi-label row's K values (1, 0, -1)
    label: int | list[int]
    # where the row lives, for messages: "<file> row 7" or the image file's path
    where: str
    # the stored image, or why it could not be read (raised when the row is decoded)
    content: bytes | np.ndarray | BadImage
    # the lesion mask (a Volume for a volume's mask), or why it could not be read; for data.mask_columns
    # one per label in class_names order (None: no column, or a row without a lesion)
    mask: bytes | Volume | BadImage | list[bytes | None] | None = None
    # the image's own file name, for people: the HF struct's `path`, the linked or folder file; None for arrays
    name: str | None = None
    # where the mask was read from, for messages, when it has a file of its own (a CSV's mask column)
    mask_where: str | None = None


class SourceKind:
    """One way of storing a labelled dataset (data.source). A kind overrides `discover` and `rows`,
    and the other hooks where its layout needs it; `registry.register` makes it known by `name`."""

    name: str = ""
    # what check_usable says medray expects when a split is empty
    layout: str = ""
    # a file with one of these suffixes holds this kind (`medray data inspect PATH` guesses by it)
    suffixes: tuple[str, ...] = ()
    # pieces one Ray Data read task takes: parquet and .npz pieces hold hundreds of rows
    pieces_per_read_task: int = 1
    # spatial axes of its rows (the Source's spatial_dims unless its discovery decides otherwise)
    spatial_dims: int = 2

    def discover(self, data_config) -> Source:
        """The splits, classes and read tasks of data.path, from listings and metadata only."""
        raise NotImplementedError

    def rows(self, piece: dict, settings: dict) -> Iterator[RawRow]:
        """The rows of one read task as stored content (in a Ray Data worker); `settings` is
        `reader_settings`'s dict. Bad content is not judged here, only when it is decoded."""
        raise NotImplementedError

    def labeller(self, class_names: list[str], data_config, multi_label: bool = False) -> Labeller:
        """The labeller of this kind's rows; `multi_label` when discovery finds several labels per
        image (lists of names, multi-hot vectors, one column per label)."""
        skip = data_config.on_bad_image == "skip"
        return MultiLabeller(class_names, skip, data_config.uncertain) if multi_label else Labeller(class_names, skip)

    def holds(self, folder: Path) -> bool:
        """Whether the local folder holds a dataset of this kind (for guessing data.source)."""
        return False

    def has_labels(self, data_config) -> bool:
        """Whether data.path carries labels, when data.labelled does not say."""
        return True

    def unlabelled_pieces(self, data_config) -> tuple[str | Path, list[dict]]:
        """The root and the read tasks of every row of data.path, all of split "test", label UNLABELLED."""
        raise MedrayError(f"data.source={data_config.source}: images without labels come as a folder "
                          "(data.source: folders) or parquet files (data.source: parquet)")

    def row_source(self, piece: dict, row: int) -> str:
        """Where row `row` of a piece (one of its `rows`) was read from, for predictions.parquet."""
        return f"{piece['file']} row {piece['offset'] + row}"

    def file_facts(self, row_id: str) -> tuple[str, str]:
        """The letters a row's file name starts with and the folder it sits in below its class,
        for the shortcut detector; empty where rows have no file of their own."""
        return "", ""


def split_of(name: str) -> str | None:
    """`train-00000-of-00001.parquet` -> train; `validation` -> val; unknown -> None."""
    stem = name.split(".")[0]
    for separator in ("-", "_"):
        stem = stem.split(separator)[0]
    return SPLIT_ALIASES.get(stem.lower())


def count_labels(pieces: list[dict], num_classes: int) -> list[int]:
    """Rows per class; for multi-label pieces (a K-vector per row) the rows with each label present."""
    labels = label_array([label for piece in pieces for label in piece["labels"]])
    if labels.ndim == 2:
        return (labels == 1).sum(axis=0).astype(int).tolist() if len(labels) else [0] * num_classes
    return np.bincount(labels, minlength=num_classes).tolist()


def label_array(labels) -> np.ndarray:
    """Labels as int64: (N,) class indices, or (N, K) for multi-label rows (each a sequence of K values)."""
    labels = list(labels)
    if labels and np.ndim(labels[0]) == 1:
        return np.asarray([np.asarray(label, dtype=np.int64) for label in labels], dtype=np.int64)
    return np.asarray(labels, dtype=np.int64)


def row_label(label) -> int | list[int]:
    """One row's label as a kind's `rows` yields it, however Ray Data handed the piece over (a
    number, a list, an array): an int, or a list of K ints for a multi-label row."""
    values = np.asarray(label)
    return int(values) if values.ndim == 0 else [int(value) for value in values]


def missing_path(path: str) -> MedrayError:
    if storage.is_uri(path):
        return storage.missing(path, "data.path", "upload the dataset there or point data.path at it")
    if storage.name(path) in ("parquet", "folders"):  # where `medray data synth --out DIR` writes
        return storage.missing(path, "data.path", "create the demo data with `medray data synth --out "
                                                  f"{storage.parent(path)}` or point data.path at your dataset")
    return storage.missing(path, "data.path", "point data.path at your dataset (--set data.path=...)")


def data_paths(data_config) -> list[str]:
    paths = data_config.path if isinstance(data_config.path, list) else [data_config.path]
    return [storage.normalise(path) for path in paths]


def local_paths(data_config) -> list[Path]:
    """data.path as local paths: images without labels are read from a local or mounted folder."""
    paths = data_paths(data_config)
    remote = [path for path in paths if storage.is_uri(path)]
    if remote:
        raise MedrayError(f"data.path {remote[0]}: images without labels are read from a local or mounted "
                          "folder for now; copy them there (labelled data can stay in object storage)")
    return [Path(path) for path in paths]


def path_type(path: str) -> pafs.FileType:
    return storage.info(path, "data.path").type


def is_image_name(file: str) -> bool:
    name = storage.name(file)
    return "." in name and "." + name.rsplit(".", 1)[1].lower() in IMAGE_SUFFIXES and not name.startswith(".")


class Labeller:
    """Turns raw labels into class indices; unknown ones stop discovery or become rejected rows."""

    multi_label = False

    def __init__(self, class_names: list[str], skip: bool):
        self.class_names, self.skip, self.rejected = class_names, skip, []

    def rows(self, values: list, row_ids: list[str], where: list[str], split: str) -> list[int | None]:
        indices = []
        for value, row_id, place in zip(values, row_ids, where):
            index = self.index(value)
            if index is None:
                message = (f"{place}: label {value!r} is not a known class ({', '.join(self.class_names)}); "
                           "fix the label, list every class in data.class_names, or set "
                           "data.on_bad_image: skip to leave such rows out")
                if not self.skip:
                    raise MedrayError(message)
                self.rejected.append({"row_id": row_id, "split": split, "source": place,
                                      "status": UNKNOWN_LABEL, "message": message})
            indices.append(index)
        return indices

    def index(self, value) -> int | None:
        if isinstance(value, str):
            return self.class_names.index(value) if value in self.class_names else None
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return int(value) if 0 <= value < len(self.class_names) else None
        return None


class MultiLabeller(Labeller):
    """Turns a multi-label row into K values in class_names order (1 present, 0 absent, -1 unknown).

    A row's raw label is a list of label names (an empty list: no finding) or a multi-hot list of K
    values 1/0/-1. data.uncertain applies CheXpert's policies (Irvin et al., "CheXpert", AAAI 2019):
    "ones" (U-Ones) and "zeros" (U-Zeros) turn -1 into 1 or 0; "ignore" (U-Ignore) keeps -1, which
    the loss and the metrics mask out. Anything else (another value, an unknown name, another
    length, no label at all) stops discovery naming the row, or with skip becomes a rejected row.
    """

    multi_label = True

    def __init__(self, class_names: list[str], skip: bool, uncertain: str = "ignore"):
        super().__init__(class_names, skip)
        self.uncertain = {"ignore": UNCERTAIN, "ones": 1, "zeros": 0}[uncertain]

    def rows(self, values: list, row_ids: list[str], where: list[str], split: str) -> list[list[int] | None]:
        vectors = []
        for value, row_id, place in zip(values, row_ids, where):
            vector, problem = self.vector(value)
            if problem is not None:
                message = (f"{place}: {problem}; fix the row, or set data.on_bad_image: skip to leave "
                           "such rows out")
                if not self.skip:
                    raise MedrayError(message)
                status = UNKNOWN_LABEL if problem.startswith("label name") else BAD_LABEL
                self.rejected.append({"row_id": row_id, "split": split, "source": place,
                                      "status": status, "message": message})
            vectors.append(vector)
        return vectors

    def vector(self, value) -> tuple[list[int] | None, str | None]:
        """(the K values, None) or (None, what is wrong with `value`)."""
        if value is None:
            return None, "the row has no label (write an empty list for an image without findings)"
        values = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
        if all(isinstance(item, str) for item in values) and values:
            unknown = [item for item in values if item not in self.class_names]
            if unknown:
                return None, (f"label name {unknown[0]!r} is not one of the labels "
                              f"({', '.join(self.class_names)}); fix it or list it in data.class_names")
            return [int(name in values) for name in self.class_names], None
        if not values:
            return [0] * len(self.class_names), None
        numbers = [item for item in values if _is_integral(item)]
        if len(numbers) != len(values):
            bad = next(item for item in values if not _is_integral(item))
            return None, f"label value {bad!r} is neither 1, 0 nor -1 (unknown) nor a label name"
        bad = next((int(item) for item in numbers if int(item) not in (1, 0, UNCERTAIN)), None)
        if bad is not None:
            return None, f"label value {bad} is not 1 (present), 0 (absent) or -1 (unknown)"
        if len(values) != len(self.class_names):
            return None, (f"{len(values)} label values, expected {len(self.class_names)} (one per label: "
                          f"{', '.join(self.class_names)})")
        return [self.uncertain if int(item) == UNCERTAIN else int(item) for item in numbers], None


def _is_integral(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, np.integer)):
        return True
    return isinstance(value, (float, np.floating)) and float(value).is_integer()


def piece_of_rows(file: str, part: int, positions: list[int], row_ids: list[str],
                  labels: list, split: str, offset: int = 0) -> dict | None:
    """One read task of the rows that have a class; None if it has none."""
    kept = [i for i, label in enumerate(labels) if label is not None]
    if not kept:
        return None
    return {"file": file, "part": part, "offset": offset, "rows": [positions[i] for i in kept],
            "row_ids": [row_ids[i] for i in kept], "labels": [labels[i] for i in kept], "split": split}


def labelled_source(kind: SourceKind, path: str, class_names: list[str], pieces: dict[str, list[dict]],
                    labeller: Labeller, **extra) -> Source:
    counts = {split: count_labels(pieces[split], len(class_names)) for split in SPLITS}
    extra.setdefault("spatial_dims", kind.spatial_dims)
    return Source(kind.name, path, list(class_names), pieces, counts, rejected=labeller.rejected,
                  multi_label=labeller.multi_label, **extra)


def reader_settings(source: Source, data_config) -> dict:
    """What `SourceKind.rows` and the decoders of a Ray Data worker need from the config.

    Masks: "mask_column" (one mask per image) or "mask_columns" (data.mask_columns: one column per
    label in class_names order, None for a label without one); neither when the source has none.
    "label_shape" is one row's label: () a class index, (K,) a multi-label vector."""
    per_label = bool(source.has_masks and data_config.mask_columns)
    return {"kind": source.kind, "source_path": str(source.path), "image_column": data_config.image_column,
            "path_column": data_config.path_column, "label_column": data_config.label_column,
            "mask_column": data_config.mask_column if source.has_masks and not per_label else None,
            "mask_columns": ([data_config.mask_columns.get(name) for name in source.class_names]
                             if per_label else None),
            "label_shape": (len(source.class_names),) if source.multi_label else (),
            "max_pixels": data_config.max_image_pixels, "color": source.color,
            "window": resolve_window(getattr(data_config, "window", None))}
