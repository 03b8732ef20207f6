"""MedMNIST's layout: train_images / train_labels, val_*, test_* arrays in one .npz file, read in
chunks of NPZ_ROWS_PER_PIECE rows (one read task each). Never unpickled.

Labels of shape N or N x 1 are class indices; N x K with K > 1 are K labels per image (multi-label,
as MedMNIST's ChestMNIST: 1 present, 0 absent, -1 unknown), named by data.class_names or label_0...
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pyarrow.fs as pafs

from medray import storage
from medray.data.sources.base import (SPLITS, RawRow, Source, SourceKind, data_paths, labelled_source, missing_path,
                                      path_type, piece_of_rows, row_label)
from medray.data.sources.registry import register
from medray.errors import MedrayError

NPZ_ROWS_PER_PIECE = 1024


class NpzSource(SourceKind):
    name = "npz"
    layout = "<split>_images and <split>_labels arrays"
    suffixes = (".npz",)
    # rows one read task (a piece) takes
    rows_per_piece = NPZ_ROWS_PER_PIECE

    def discover(self, data_config) -> Source:
        """MedMNIST layout: train_images / train_labels, val_*, test_* in one .npz file."""
        paths = data_paths(data_config)
        path = paths[0]
        kind = path_type(path) if len(paths) == 1 else None
        if kind != pafs.FileType.File:
            raise missing_path(path) if kind == pafs.FileType.NotFound else MedrayError(
                f"data.path {data_config.path}: expected one .npz file")
        # split -> class indices, or one list of K values per image (multi-label)
        raw: dict[str, list] = {}
        widths = set()
        # allow_pickle=False: an .npz may carry pickled objects, which would run code on load.
        with storage.open_input(path) as handle, np.load(handle, allow_pickle=False) as arrays:
            for split in SPLITS:
                for key in (f"{split}_images", f"{split}_labels"):
                    if key not in arrays.files:
                        raise MedrayError(f"{path}: no array {key!r} (arrays: {', '.join(arrays.files)}); "
                                          "medray reads the MedMNIST layout train_/val_/test_images and _labels")
                images = self.check_images(path, f"{split}_images", *npz_header(arrays, f"{split}_images", path))
                split_labels = _load_array(arrays, f"{split}_labels", path)
                check_npz_labels(path, f"{split}_labels", split_labels.shape, split_labels.dtype)
                width = split_labels.shape[1] if split_labels.ndim == 2 else 1
                widths.add(width)
                raw[split] = (split_labels.astype(np.int64).tolist() if width > 1
                              else [int(label) for label in split_labels.reshape(-1)])
                if images[0] != len(raw[split]):
                    raise MedrayError(f"{path}: {split}_images holds {images[0]} images but {split}_labels "
                                      f"{len(raw[split])} labels; give every image one label")
        if len(widths) > 1:
            raise MedrayError(f"{path}: the _labels arrays have {' and '.join(map(str, sorted(widths)))} columns; "
                              "every split needs the same labels")
        width = widths.pop()
        multi_label = width > 1
        class_names = data_config.class_names or _default_names(raw, width)
        if multi_label and len(class_names) != width:
            raise MedrayError(f"{path}: the _labels arrays hold {width} labels per image but data.class_names "
                              f"lists {len(class_names)}; name every label, in column order")
        labeller = self.labeller(class_names, data_config, multi_label)
        pieces: dict[str, list[dict]] = {split: [] for split in SPLITS}
        for split in SPLITS:
            for start in range(0, len(raw[split]), self.rows_per_piece):
                positions = list(range(start, min(start + self.rows_per_piece, len(raw[split]))))
                row_ids = [f"{storage.name(path)}#{split}#{n}" for n in positions]
                labels = labeller.rows([raw[split][n] for n in positions], row_ids,
                                       [f"{path} {split} row {n}" for n in positions], split)
                piece = piece_of_rows(path, 0, positions, row_ids, labels, split)
                pieces[split] += [piece] if piece else []
        return labelled_source(self, path, class_names, pieces, labeller)

    def check_images(self, path: str, key: str, shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, ...]:
        """The images array's shape, if this kind reads it (see `check_npz_images`)."""
        return check_npz_images(path, key, shape, dtype)

    def rows(self, piece: dict, settings: dict) -> Iterator[RawRow]:
        file, split = str(piece["file"]), str(piece["split"])
        positions = np.asarray(piece["rows"], dtype=np.int64)
        with storage.open_input(file) as handle, np.load(handle, allow_pickle=False) as arrays:
            images = arrays[f"{split}_images"][positions]
        for position, image, row_id, label in zip(positions, images, piece["row_ids"], piece["labels"]):
            yield RawRow(str(row_id), row_label(label), f"{file} {split} row {position}", image)


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
        problem = (f"looks like 3-D volumes ({shape[1]}x{shape[2]}x{shape[3]}); read volumes with "
                   "data.source: npz_volumes" if shape[3] > 4 else
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
    """N or N x 1 integer class indices, or N x K integer label values (multi-label, as ChestMNIST)."""
    if len(shape) not in (1, 2) or not np.issubdtype(dtype, np.integer):
        raise MedrayError(f"{path}: {key} has shape {shape} and dtype {dtype}; medray reads integer class "
                          "indices of shape N or N x 1, or N x K label values 1/0/-1 (multi-label)")


def _default_names(raw: dict[str, list], width: int) -> list[str]:
    if width > 1:
        return [f"label_{index}" for index in range(width)]
    largest = max((max(values) for values in raw.values() if values), default=0)
    return [f"class_{index}" for index in range(largest + 1)]


def _load_array(arrays, key: str, path: str) -> np.ndarray:
    try:
        return arrays[key]
    except ValueError as error:  # object arrays need pickle, which medray never loads
        raise MedrayError(f"{path}: array {key!r} cannot be read safely ({error}); save it as numbers") from None


register(NpzSource())
