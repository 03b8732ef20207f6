"""MedMNIST-3D's layout: train_images (N, D, H, W) / train_labels (N, 1), val_*, test_* in one .npz
file (OrganMNIST3D, NoduleMNIST3D, ...), plus optional `<split>_masks` (N, D, H, W) lesion masks
(non-zero = lesion) that the localisation checks read. Read in chunks of VOLUME_ROWS_PER_PIECE
volumes per read task, so a split of volumes is never held by the driver. Never unpickled.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterator

import numpy as np

from medray import storage
from medray.data.sources.base import SPLITS, RawRow, Source, row_label
from medray.data.sources.npz import NpzSource, npz_header
from medray.data.sources.registry import register
from medray.data.volumes import Volume
from medray.errors import MedrayError

# 64 volumes of 64^3 uint8 are 16 MB: a read task's output stays a modest Ray Data block.
VOLUME_ROWS_PER_PIECE = 64


class NpzVolumeSource(NpzSource):
    name = "npz_volumes"
    layout = "<split>_images (N x D x H x W) and <split>_labels arrays"
    # Guessing by suffix finds the 2-D kind; volumes are named by data.source.
    suffixes = ()
    rows_per_piece = VOLUME_ROWS_PER_PIECE
    spatial_dims = 3

    def discover(self, data_config) -> Source:
        source = super().discover(data_config)
        with storage.open_input(source.path) as handle, np.load(handle, allow_pickle=False) as arrays:
            masked = [split for split in SPLITS if f"{split}_masks" in arrays.files]
            for split in masked:
                shape, _dtype = npz_header(arrays, f"{split}_masks", source.path)
                images, _dtype = npz_header(arrays, f"{split}_images", source.path)
                if shape[:4] != images[:4]:
                    raise MedrayError(f"{source.path}: {split}_masks has shape {shape} but {split}_images "
                                      f"{images}; give every volume one mask of its own shape")
        # Masks are read for the test split's localisation checks only.
        return replace(source, has_masks="test" in masked)

    def check_images(self, path: str, key: str, shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, ...]:
        """N x D x H x W (or N x D x H x W x 1) numbers: one gray volume per row."""
        problem = None
        if len(shape) == 3:
            problem = "holds 2-D images (N x H x W), not volumes; read them with data.source: npz"
        elif len(shape) == 5 and shape[4] != 1:
            problem = (f"holds {shape[4]} values per voxel (a 4-D series, several echoes or colour); "
                       "give one gray volume per row")
        elif len(shape) not in (4, 5):
            problem = "is not a stack of volumes"
        elif not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
            problem = f"is {dtype}, not numbers"
        if problem:
            raise MedrayError(f"{path}: {key} has shape {shape} and {problem} (expected N x D x H x W)")
        return shape

    def rows(self, piece: dict, settings: dict) -> Iterator[RawRow]:
        file, split = str(piece["file"]), str(piece["split"])
        positions = np.asarray(piece["rows"], dtype=np.int64)
        with storage.open_input(file) as handle, np.load(handle, allow_pickle=False) as arrays:
            volumes = arrays[f"{split}_images"][positions]
            masks = (arrays[f"{split}_masks"][positions] if settings.get("mask_column")
                     and f"{split}_masks" in arrays.files else [None] * len(positions))
        for position, voxels, mask, row_id, label in zip(positions, volumes, masks, piece["row_ids"],
                                                         piece["labels"]):
            yield RawRow(str(row_id), row_label(label), f"{file} {split} row {position}",
                         Volume(voxels, window=settings.get("window")),
                         mask=None if mask is None else Volume(mask))


register(NpzVolumeSource())
