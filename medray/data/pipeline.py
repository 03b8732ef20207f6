"""Ray Datasets for a run: read -> decode -> (augment) -> preprocess, all streamed in map_batches.

A split's rows after decoding: `row_id` (str), `pixels` (uint8 H x W) and `label` (int64), plus
`mask` (uint8 H x W, 255 = lesion) when the parquet has the configured mask column.
Training and validation rows then become `image` (float32, the backbone's input) and `label`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq
import ray
from ray.data.expressions import random

from medray.data.augment import SEED_COLUMN, augment_pixels, batch_rng
from medray.data.decode import decode_gray, decode_mask, resize_gray
from medray.data.preprocess import to_model_input
from medray.data.sources import Source
from medray.models.registry import Backbone

# Parquet pieces are whole row groups (hundreds of rows); files are read a few dozen at a time.
FILES_PER_READ = 32


@dataclass(frozen=True)
class TrainingData:
    train: ray.data.Dataset
    val: ray.data.Dataset


def read_split(source: Source, split: str, image_size: int, data_config) -> ray.data.Dataset:
    """Decoded rows of one split: row_id, pixels (uint8 image_size x image_size), label."""
    pieces = source.pieces[split]
    settings = {"image_size": image_size, "max_pixels": data_config.max_image_pixels}
    items = ray.data.from_items(pieces, override_num_blocks=max(1, min(len(pieces), 64)))
    if source.kind == "parquet":
        settings |= {"image_column": data_config.image_column, "label_column": data_config.label_column,
                     "mask_column": data_config.mask_column if source.has_masks else None}
        return items.map_batches(read_parquet_pieces, batch_size=1, fn_kwargs=settings)
    if source.kind == "npz":
        return items.map_batches(read_npz_pieces, batch_size=1, fn_kwargs={"image_size": image_size})
    return items.map_batches(read_image_files, batch_size=FILES_PER_READ, fn_kwargs=settings)


def read_parquet_pieces(pieces: dict, image_size: int, max_pixels: int, image_column: str,
                        label_column: str, mask_column: str | None) -> dict:
    row_ids, pixels, labels, masks = [], [], [], []
    columns = [image_column, label_column, *([mask_column] if mask_column else [])]
    for file, group, first_row in zip(pieces["file"], pieces["row_group"], pieces["first_row"]):
        table = pq.ParquetFile(file).read_row_group(int(group), columns=columns)
        name = file.rsplit("/", 1)[-1]
        image_blobs = _image_bytes(table.column(image_column))
        mask_blobs = _image_bytes(table.column(mask_column)) if mask_column else image_blobs
        for offset, (blob, label, mask_blob) in enumerate(
                zip(image_blobs, table.column(label_column).to_pylist(), mask_blobs)):
            where = f"{file} row {int(first_row) + offset}"
            row_ids.append(f"{name}#{int(first_row) + offset}")
            pixels.append(decode_gray(blob, image_size, max_pixels, where=where))
            labels.append(label)
            if mask_column:
                masks.append(decode_mask(mask_blob, image_size, max_pixels, where=f"{where} (mask)"))
    rows = _rows(row_ids, pixels, labels, image_size)
    if mask_column:
        rows["mask"] = np.stack(masks) if masks else np.zeros((0, image_size, image_size), np.uint8)
    return rows


def _image_bytes(column) -> list:
    """Hugging Face stores images as struct {bytes, path}; plain binary columns work too."""
    images = column.combine_chunks()
    return (images.field("bytes") if hasattr(images.type, "get_field_index") else images).to_pylist()


def read_image_files(files: dict, image_size: int, max_pixels: int) -> dict:
    pixels = []
    for path in files["file"]:
        with open(path, "rb") as handle:
            pixels.append(decode_gray(handle.read(), image_size, max_pixels, where=path))
    return _rows(list(files["row_id"]), pixels, list(files["label"]), image_size)


def read_npz_pieces(pieces: dict, image_size: int) -> dict:
    row_ids, pixels, labels = [], [], []
    for file, split, start, stop in zip(pieces["file"], pieces["split"], pieces["start"], pieces["stop"]):
        with np.load(file, allow_pickle=False) as arrays:
            images = arrays[f"{split}_images"][int(start):int(stop)]
            split_labels = arrays[f"{split}_labels"].reshape(-1)[int(start):int(stop)]
        name = file.rsplit("/", 1)[-1]
        for offset, (image, label) in enumerate(zip(images, split_labels)):
            row_ids.append(f"{name}#{split}#{int(start) + offset}")
            pixels.append(resize_gray(image, image_size))
            labels.append(int(label))
    return _rows(row_ids, pixels, labels, image_size)


def _rows(row_ids: list, pixels: list, labels: list, image_size: int) -> dict:
    return {
        "row_id": np.asarray(row_ids, dtype=object),
        "pixels": np.stack(pixels) if pixels else np.zeros((0, image_size, image_size), np.uint8),
        "label": np.asarray(labels, dtype=np.int64),
    }


def one_batch_per_block(decoded: ray.data.Dataset, batch_size: int) -> ray.data.Dataset:
    """Decoded rows re-blocked for an actor pool (prediction, CAMs).

    Rows arrive in blocks of whole parquet row groups, and an actor's task would bundle enough of
    those to make one batch: the whole test set in one task, on one actor. One batch per block
    (streamed, no shuffle) spreads batches over the pool and lets results reach the driver early.
    """
    return decoded.repartition(target_num_rows_per_block=batch_size)


def training_data(source: Source, backbone: Backbone, image_size: int, config) -> TrainingData:
    """Train rows augmented afresh every epoch, validation rows as they are; both preprocessed."""
    augment = config.data.augment
    train = (
        read_split(source, "train", image_size, config.data)
        .with_column(SEED_COLUMN, random(seed=config.seed))
        .map_batches(augment_and_prepare, fn_kwargs={
            "backbone": backbone, "flip": augment.flip, "rotation_degrees": augment.rotation_degrees})
    )
    val = read_split(source, "val", image_size, config.data).map_batches(
        prepare, fn_kwargs={"backbone": backbone})
    return TrainingData(train=train, val=val)


def augment_and_prepare(batch: dict, backbone: Backbone, flip: bool, rotation_degrees: float) -> dict:
    rng = batch_rng(batch[SEED_COLUMN])
    pixels = augment_pixels(batch["pixels"], rng, flip=flip, rotation_degrees=rotation_degrees)
    return {"image": to_model_input(pixels, backbone), "label": batch["label"]}


def prepare(batch: dict, backbone: Backbone) -> dict:
    return {"image": to_model_input(batch["pixels"], backbone), "label": batch["label"]}
