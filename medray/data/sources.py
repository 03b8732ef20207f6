"""Find a dataset's splits, classes and rows on disk, before any Ray work starts.

Discovery reads only listings and parquet metadata plus the label column, so a missing path, an
empty split or a single class stops the run in a second with a sentence, not in a Ray worker.
Each split becomes a list of read tasks ("pieces"), one shape for every source:
`{file, part, offset, rows, row_ids, labels, split}` - a parquet row group (starting at row `offset`
of its file), a chunk of an .npz split or one image file, with the positions of its rows in that part
and their labels as class indices.
"""

from __future__ import annotations

import glob
import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from medray import storage
from medray.errors import MedrayError

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "test": "test", "testing": "test"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm"}
# MedMNIST arrays are read in chunks of this many rows, one Ray task each.
NPZ_ROWS_PER_PIECE = 1024
UNKNOWN_LABEL = "unknown label"


@dataclass(frozen=True)
class Source:
    kind: str
    # a local path or a URI (s3://bucket/prefix): the pieces' files are locations of the same kind
    path: str
    class_names: list[str]
    # split -> read tasks; a task is a small dict that Ray Data ships to a reader
    pieces: dict[str, list[dict]]
    # split -> rows per class, in class_names order
    class_counts: dict[str, list[int]] = field(default_factory=dict)
    # whether rows carry ground-truth lesion masks (the parquet has data.mask_column)
    has_masks: bool = False
    # rows refused before decoding (unknown labels, with on_bad_image: skip): row_id, split, source, ...
    rejected: list[dict] = field(default_factory=list)
    # files in class folders that are not images (.DS_Store, notes.txt): ignored, but counted
    ignored_files: list[str] = field(default_factory=list)
    # how images are read: "gray" (H x W) or "rgb" (H x W x 3); data.color "auto" is decided in discover
    color: str = "gray"

    def num_rows(self, split: str) -> int:
        return sum(self.class_counts[split])


def discover(data_config) -> Source:
    discover_kind = {"parquet": _discover_parquet, "folders": _discover_folders, "npz": _discover_npz}
    source = discover_kind[data_config.source](data_config)
    if data_config.split.val_from_train:
        from medray.data.validation import carve_validation  # it builds on this module

        source = carve_validation(source, data_config.split.val_from_train, data_config.split.seed)
    check_usable(source)
    from medray.data.color import with_color  # it reads rows through readers, which build on this module

    return with_color(source, data_config)


def guess_kind(path: Path) -> str:
    """The data.source that `path` holds, as `medray data inspect PATH` is typed: an .npz file is
    npz; a .parquet file, or a folder with parquet files anywhere below it, is parquet; a folder of
    (split and) class folders of PNG, JPEG or DICOM files is folders.

    Raises MedrayError naming the path when it is missing or holds none of these.
    """
    if storage.is_uri(str(path)):
        kind = {".npz": "npz", ".parquet": "parquet"}.get(PurePosixPath(str(path)).suffix.lower())
        if kind is None:
            raise MedrayError(f"{path}: medray guesses the kind of local folders only; pass --source "
                              "parquet, folders or npz with a URI")
        return kind
    path = Path(path)
    if not path.exists():
        raise _missing(path)
    if path.is_file():
        kind = {".npz": "npz", ".parquet": "parquet"}.get(path.suffix.lower())
        if kind is None:
            raise MedrayError(f"{path} is neither .parquet nor .npz; for image files (PNG, JPEG, DICOM), "
                              "pass the folder that holds the class folders")
        return kind
    if next(path.rglob("*.parquet"), None) is not None:
        return "parquet"
    if any(_is_image_name(file) for file in path.rglob("*")):
        return "folders"
    archives = sorted(path.glob("*.npz"))
    hint = f"; for MedMNIST arrays pass the file itself, e.g. {archives[0]}" if archives else ""
    raise MedrayError(f"{path} holds no .parquet files and no images (PNG, JPEG, DICOM) in class folders{hint}")


def split_of(name: str) -> str | None:
    """`train-00000-of-00001.parquet` -> train; `validation` -> val; unknown -> None."""
    stem = name.split(".")[0]
    for separator in ("-", "_"):
        stem = stem.split(separator)[0]
    return SPLIT_ALIASES.get(stem.lower())


def count_labels(pieces: list[dict], num_classes: int) -> list[int]:
    labels = [label for piece in pieces for label in piece["labels"]]
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).tolist()


def _missing(path: str) -> MedrayError:
    if storage.is_uri(path):
        return storage.missing(path, "data.path", "upload the dataset there or point data.path at it")
    if storage.name(path) in ("parquet", "folders"):  # where `medray data synth --out DIR` writes
        return storage.missing(path, "data.path", "create the demo data with `medray data synth --out "
                                                  f"{storage.parent(path)}` or point data.path at your dataset")
    return storage.missing(path, "data.path", "point data.path at your dataset (--set data.path=...)")


def _paths(data_config) -> list[str]:
    paths = data_config.path if isinstance(data_config.path, list) else [data_config.path]
    return [storage.normalise(path) for path in paths]


def _kind(path: str) -> pafs.FileType:
    return storage.info(path, "data.path").type


class _Labeller:
    """Turns raw labels into class indices; unknown ones stop discovery or become rejected rows."""

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


def _pieces_from_rows(file: str, part: int, positions: list[int], row_ids: list[str],
                      labels: list[int | None], split: str, offset: int = 0) -> dict | None:
    """One read task of the rows that have a class; None if it has none."""
    kept = [i for i, label in enumerate(labels) if label is not None]
    if not kept:
        return None
    return {"file": file, "part": part, "offset": offset, "rows": [positions[i] for i in kept],
            "row_ids": [row_ids[i] for i in kept], "labels": [labels[i] for i in kept], "split": split}


def _source(kind: str, path: str, class_names: list[str], pieces: dict[str, list[dict]], labeller: _Labeller,
            **extra) -> Source:
    counts = {split: count_labels(pieces[split], len(class_names)) for split in SPLITS}
    return Source(kind, path, list(class_names), pieces, counts, rejected=labeller.rejected, **extra)


# --- parquet ------------------------------------------------------------------------------------

def parquet_files(data_config) -> list[str]:
    files = []
    for path in _paths(data_config):
        if glob.has_magic(path):
            matches = storage.glob(path, "data.path")
            if not matches:
                raise MedrayError(f"data.path {path}: the pattern matches no file")
            files += [match for match in matches if match.endswith(".parquet")]
        elif (kind := _kind(path)) == pafs.FileType.Directory:
            files += [file for file, _ in storage.list_files(path, "data.path") if file.endswith(".parquet")]
        elif kind == pafs.FileType.File:
            files.append(path)
        else:
            raise _missing(path)
    if not files:
        raise MedrayError(f"data.path {data_config.path}: no .parquet files found")
    return list(dict.fromkeys(files))


def _discover_parquet(data_config) -> Source:
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
    class_names = data_config.class_names or _parquet_class_names(tables, data_config.label_column)
    labeller = _Labeller(class_names, data_config.on_bad_image == "skip")
    pieces: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for file, (split, metadata, values) in tables.items():
        name = storage.relative(file, root)
        offset = 0
        for group in range(metadata.num_row_groups):
            rows = metadata.metadata.row_group(group).num_rows
            numbers = range(offset, offset + rows)
            row_ids = [f"{name}#{number}" for number in numbers]
            labels = labeller.rows(values[offset:offset + rows], row_ids, [f"{file} row {n}" for n in numbers], split)
            piece = _pieces_from_rows(file, group, list(range(rows)), row_ids, labels, split, offset)
            pieces[split] += [piece] if piece else []
            offset += rows
    has_masks = data_config.mask_column is not None and all(
        data_config.mask_column in metadata.schema_arrow.names for _, metadata, _ in tables.values())
    return _source("parquet", root, class_names, pieces, labeller, has_masks=has_masks)


def _parquet_class_names(tables: dict, label_column: str) -> list[str]:
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


# --- class folders ------------------------------------------------------------------------------

def _discover_folders(data_config) -> Source:
    paths = _paths(data_config)
    kind = _kind(paths[0]) if len(paths) == 1 else None
    if kind != pafs.FileType.Directory:
        if kind == pafs.FileType.NotFound:
            raise _missing(paths[0])
        raise MedrayError(f"data.path {data_config.path}: data.source folders needs one folder")
    root = paths[0]
    children = storage.list_files(root, "data.path", recursive=False)
    split_dirs = {}
    for child, is_dir in children:
        if is_dir and storage.name(child).lower() in SPLIT_ALIASES:
            split_dirs.setdefault(SPLIT_ALIASES[storage.name(child).lower()], child)
    ignored: list[str] = []
    if split_dirs:  # root/<split>/<class>/*: the splits are used as given
        files = {split: _class_files(split_dirs[split], ignored) if split in split_dirs else {}
                 for split in SPLITS}
        ignored += [child for child, is_dir in children if not is_dir]
    else:  # root/<class>/*: medray makes a stratified split
        files = stratified_split(_class_files(root, ignored), data_config.split)
    found = sorted({name for by_class in files.values() for name in by_class})
    class_names = data_config.class_names or found
    labeller = _Labeller(class_names, data_config.on_bad_image == "skip")
    pieces: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for split in SPLITS:
        for class_name, class_files in files[split].items():
            for file in class_files:
                row_id = storage.relative(file, root)
                label = labeller.rows([class_name], [row_id], [file], split)
                piece = _pieces_from_rows(file, 0, [0], [row_id], label, split)
                pieces[split] += [piece] if piece else []
    return _source("folders", root, class_names, pieces, labeller, ignored_files=sorted(ignored))


def _class_files(folder: str, ignored: list[str]) -> dict[str, list[str]]:
    """class -> image files under folder/<class>/ (nested folders too); anything else goes to `ignored`."""
    by_class = {}
    for child, is_dir in storage.list_files(folder, "data.path", recursive=False):
        if not is_dir:
            ignored.append(child)
            continue
        files = sorted((file for file, _ in storage.list_files(child, "data.path")), key=_parts)
        by_class[storage.name(child)] = [file for file in files if _is_image_name(file)]
        ignored += [file for file in files if not _is_image_name(file)]
    return by_class


def _parts(location: str) -> list[str]:
    # Sorted folder by folder, as pathlib sorts: the split's seed must pick the same files as before.
    return location.split("/")


def _is_image_name(file: str) -> bool:
    name = storage.name(file)
    return "." in name and "." + name.rsplit(".", 1)[1].lower() in IMAGE_SUFFIXES and not name.startswith(".")


def stratified_split(by_class: dict[str, list[str]], split_config) -> dict[str, dict[str, list[str]]]:
    """Each class shuffled by data.split.seed and cut by the fractions: every split keeps the class mix."""
    splits: dict[str, dict[str, list[str]]] = {split: {} for split in SPLITS}
    for index, (class_name, files) in enumerate(sorted(by_class.items())):
        order = np.random.default_rng([split_config.seed, index]).permutation(len(files))
        shuffled = [files[i] for i in order]
        n_val, n_test = round(len(files) * split_config.val), round(len(files) * split_config.test)
        splits["val"][class_name] = sorted(shuffled[:n_val], key=_parts)
        splits["test"][class_name] = sorted(shuffled[n_val:n_val + n_test], key=_parts)
        splits["train"][class_name] = sorted(shuffled[n_val + n_test:], key=_parts)
    return splits


# --- MedMNIST .npz ------------------------------------------------------------------------------

def _discover_npz(data_config) -> Source:
    """MedMNIST layout: train_images / train_labels, val_*, test_* in one .npz file."""
    paths = _paths(data_config)
    path = paths[0]
    kind = _kind(path) if len(paths) == 1 else None
    if kind != pafs.FileType.File:
        raise _missing(path) if kind == pafs.FileType.NotFound else MedrayError(
            f"data.path {data_config.path}: expected one .npz file")
    raw: dict[str, list[int]] = {}
    # allow_pickle=False: an .npz may carry pickled objects, which would run code on load.
    with storage.open_input(path) as handle, np.load(handle, allow_pickle=False) as arrays:
        for split in SPLITS:
            for key in (f"{split}_images", f"{split}_labels"):
                if key not in arrays.files:
                    raise MedrayError(f"{path}: no array {key!r} (arrays: {', '.join(arrays.files)}); "
                                      "medray reads the MedMNIST layout train_/val_/test_images and _labels")
            images = check_npz_images(path, f"{split}_images", *npz_header(arrays, f"{split}_images", path))
            split_labels = _load_array(arrays, f"{split}_labels", path)
            check_npz_labels(path, f"{split}_labels", split_labels.shape, split_labels.dtype)
            raw[split] = [int(label) for label in split_labels.reshape(-1)]
            if images[0] != len(raw[split]):
                raise MedrayError(f"{path}: {split}_images holds {images[0]} images but {split}_labels "
                                  f"{len(raw[split])} labels; give every image one label")
    largest = max((max(values) for values in raw.values() if values), default=0)
    class_names = data_config.class_names or [f"class_{index}" for index in range(largest + 1)]
    labeller = _Labeller(class_names, data_config.on_bad_image == "skip")
    pieces: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for split in SPLITS:
        for start in range(0, len(raw[split]), NPZ_ROWS_PER_PIECE):
            positions = list(range(start, min(start + NPZ_ROWS_PER_PIECE, len(raw[split]))))
            row_ids = [f"{storage.name(path)}#{split}#{n}" for n in positions]
            labels = labeller.rows([raw[split][n] for n in positions], row_ids,
                                   [f"{path} {split} row {n}" for n in positions], split)
            piece = _pieces_from_rows(path, 0, positions, row_ids, labels, split)
            pieces[split] += [piece] if piece else []
    return _source("npz", path, class_names, pieces, labeller)


def npz_header(arrays, key: str, path: str) -> tuple[tuple[int, ...], np.dtype]:
    """An array's shape and dtype from its .npy header, without reading (or unpickling) its data."""
    with arrays.zip.open(f"{key}.npy") as member:
        version = np.lib.format.read_magic(member)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _fortran_order, dtype = read_header(member)
    if dtype.hasobject:
        raise MedrayError(f"{path}: array {key!r} holds Python objects, which medray never unpickles; "
                          "save it as numbers")
    return tuple(shape), dtype


def check_npz_images(path: str, key: str, shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, ...]:
    """N x H x W (gray), N x H x W x 1 (gray) or N x H x W x 3 (RGB) uint8: what MedMNIST's 2-D sets hold."""
    problem = None
    if len(shape) == 4 and shape[3] not in (1, 3):
        problem = (f"looks like 3-D volumes ({shape[1]}x{shape[2]}x{shape[3]}); medray classifies 2-D "
                   "images, so export slices" if shape[3] > 4 else
                   f"has {shape[3]} channels; medray reads gray (1) or RGB (3), so drop the extra channels")
    elif len(shape) not in (3, 4):
        problem = "is not a stack of images"
    elif dtype != np.uint8:
        problem = f"is {dtype}; medray reads uint8 pixels (0-255), so scale and convert with .astype(np.uint8)"
    if problem:
        raise MedrayError(f"{path}: {key} has shape {shape} and {problem} (expected N x H x W, "
                          "N x H x W x 1 or N x H x W x 3 uint8)")
    return shape


def check_npz_labels(path: str, key: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """N or N x 1 integer class indices; MedMNIST's multi-label ChestMNIST (N x 14) is refused."""
    if len(shape) == 2 and shape[1] > 1:
        raise MedrayError(f"{path}: {key} has shape {shape}: {shape[1]} labels per image; medray trains "
                          "single-label classifiers (one label per image, shape N or N x 1)")
    if len(shape) not in (1, 2) or not np.issubdtype(dtype, np.integer):
        raise MedrayError(f"{path}: {key} has shape {shape} and dtype {dtype}; medray reads integer class "
                          "indices of shape N or N x 1")


def _load_array(arrays, key: str, path: str) -> np.ndarray:
    try:
        return arrays[key]
    except ValueError as error:  # object arrays need pickle, which medray never loads
        raise MedrayError(f"{path}: array {key!r} cannot be read safely ({error}); save it as numbers") from None


def check_usable(source: Source) -> None:
    for split in SPLITS:
        if source.num_rows(split) == 0:
            layout = {"parquet": "<path>/train-*.parquet, val-*.parquet and test-*.parquet",
                      "folders": "<path>/<split>/<class>/*.png or <path>/<class>/*.png",
                      "npz": "<split>_images and <split>_labels arrays"}[source.kind]
            raise MedrayError(f"{source.path}: the {split} split has no images; medray expects {layout}")
    present = [name for name, count in zip(source.class_names, source.class_counts["train"]) if count]
    if len(present) < 2:
        raise MedrayError(
            f"{source.path}: the train split has only {len(present)} class ({', '.join(present)}); "
            "a classifier needs at least two")
