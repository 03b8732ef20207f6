"""Ray Datasets for a run: read -> decode -> (augment) -> preprocess, all streamed in map_batches.

A split's rows after decoding: `row_id` (str), `pixels` (uint8 S x S at the model's input size S, or
S x S x 3 when the source's colour is rgb), `height` and `width` (int32: the image's own size, as a
viewer shows it, before it was resized to S x S) and `label` (int64: a class index, or K values
1/0/-1 for multi-label data), plus `mask` (uint8 S x S, 255 = lesion, resized like the image) when
the parquet has the configured mask column, or K x S x S (one mask per label, in class_names order;
all zero for a label without a mask column) with data.mask_columns. With `originals`, also
`original`: the image at its own size, as bytes (uint8 height x width x channels, C order), for
pictures drawn in the scan's geometry (the explain job's overlays).
Training and validation rows then become `image` (float32, the backbone's input) and `label`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import ray
from ray.data import RandomSeedConfig
from ray.data.expressions import random

from medray.data.augment import AUGMENT_BY_SPATIAL_DIMS, SEED_COLUMN
from medray.data.decode import decode_mask, decode_row, resize_pixels
from medray.data.oversample import plan_oversampling, repeat_rows
from medray.data.readers import pieces_of, read_tasks, rows_of
from medray.data.sources.base import Source, label_array, reader_settings
from medray.data.volumes import Volume, spatial_shape, stored_shape
from medray.errors import BadImage
from medray.models.preprocessing import ModelInput, to_model_input
from medray.models.registry import Backbone


@dataclass(frozen=True)
class TrainingData:
    train: ray.data.Dataset
    val: ray.data.Dataset
    # rows in one epoch of `train` (after oversampling): decides the steps per epoch
    train_rows: int


def read_split(source: Source, split: str, image_size: int | tuple[int, ...], data_config,
               row_ids: frozenset[str] | None = None, originals: bool = False) -> ray.data.Dataset:
    """Decoded rows of one split: row_id, pixels (uint8 image_size x image_size, or a volume of the
    (D, H, W) that image_size gives), height, width (of an image, or of a volume's slices), label
    (and mask; and with `originals` the image at its own size, see the module's docstring).
    With `row_ids`, only those rows are read and decoded (the read tasks are cut down first)."""
    pieces = source.pieces[split] if row_ids is None else pieces_with_rows(source.pieces[split], row_ids)
    return read_tasks(pieces, source.kind, read_pieces, {"settings": reader_settings(source, data_config),
                                                         "image_size": image_size, "originals": originals})


def pieces_with_rows(pieces: list[dict], row_ids: frozenset[str]) -> list[dict]:
    """The read tasks cut down to the rows in `row_ids`; tasks left without rows are dropped."""
    kept = []
    for piece in pieces:
        chosen = [index for index, row_id in enumerate(piece["row_ids"]) if row_id in row_ids]
        if chosen:
            kept.append({**piece, **{name: [piece[name][index] for index in chosen]
                                     for name in ("rows", "row_ids", "labels")}})
    return kept


def read_pieces(batch: dict, settings: dict, image_size: int | tuple[int, ...], originals: bool = False) -> dict:
    row_ids, pixels, sizes, labels, masks, native = [], [], [], [], [], []
    per_label = settings.get("mask_columns")
    for piece in pieces_of(batch):
        for row in rows_of(settings["kind"], piece, settings):
            row_ids.append(row.row_id)
            decoded, mode = decode_row(row, settings["max_pixels"], color=settings["color"])
            pixels.append(resize_pixels(decoded, image_size))
            # an image's (height, width), or a volume's slices'
            sizes.append(decoded.shape[:2] if np.ndim(image_size) == 0 else decoded.shape[1:3])
            if originals:  # bytes, not an array: images of many sizes share one column
                native.append(np.ascontiguousarray(decoded).tobytes())
            labels.append(row.label)
            if per_label:
                masks.append(np.stack([label_mask(mask, image_size, settings["max_pixels"], f"{row.where} ({column})",
                                                  stored_shape(decoded, mode))
                                       for mask, column in zip(row.mask, per_label)]))
            elif settings["mask_column"]:
                masks.append(label_mask(row.mask, image_size, settings["max_pixels"],
                                        row.mask_where or f"{row.where} (mask)", stored_shape(decoded, mode)))
    label_shape = tuple(settings.get("label_shape", ()))
    rows = {
        "row_id": np.asarray(row_ids, dtype=object),
        "pixels": np.stack(pixels) if pixels else np.zeros(
            (0, *spatial_shape(image_size), *((3,) if settings["color"] == "rgb" else ())), np.uint8),
        "height": np.asarray([size[0] for size in sizes], np.int32),
        "width": np.asarray([size[1] for size in sizes], np.int32),
        "label": np.asarray(labels, dtype=np.int64) if labels else np.zeros((0, *label_shape), np.int64),
    }
    if originals:
        rows["original"] = np.asarray(native, dtype=object)
    if per_label or settings["mask_column"]:
        mask_shape = (len(per_label),) if per_label else ()
        rows["mask"] = np.stack(masks) if masks else np.zeros((0, *mask_shape, *spatial_shape(image_size)), np.uint8)
    return rows


def label_mask(data: bytes | Volume | BadImage | None, size: int | tuple[int, ...], max_pixels: int, where: str,
               image_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A row's mask, or one label's; a row or label without one (None: no mask column, a blank cell)
    has no lesion to localise (all zero)."""
    return (np.zeros(spatial_shape(size), np.uint8) if data is None
            else decode_mask(data, size, max_pixels, where, image_shape))


def select_rows(batch: dict, row_ids: frozenset[str], keep: bool = True) -> dict:
    """The rows of a decoded batch whose `row_id` is (keep) or is not (not keep) in `row_ids`.
    Here, in a module without TensorFlow, so that the Ray Data tasks running it do not import it."""
    chosen = np.isin(batch["row_id"].astype(str), list(row_ids)) == keep
    return {name: values[chosen] for name, values in batch.items()}


def one_batch_per_block(decoded: ray.data.Dataset, batch_size: int) -> ray.data.Dataset:
    """Decoded rows re-blocked for an actor pool (prediction, CAMs).

    Rows arrive in blocks of whole parquet row groups, and an actor's task would bundle enough of
    those to make one batch: the whole test set in one task, on one actor. One batch per block
    (streamed, no shuffle) spreads batches over the pool and lets results reach the driver early.
    """
    return decoded.repartition(target_num_rows_per_block=batch_size)


def training_data(source: Source, backbone: Backbone, image_size: int | tuple[int, ...], config) -> TrainingData:
    """Train rows (oversampled if configured) augmented afresh every epoch, validation rows as they
    are; both preprocessed. Training never reads lesion masks."""
    data_config = config.data.model_copy(update={"mask_column": None, "mask_columns": None})
    train_rows = source.num_rows("train")
    train = cached(read_split(source, "train", image_size, data_config), train_rows, image_size, config.data.cache)
    if config.train.class_balance == "oversample":
        plan = oversampling_plan(source, config)
        train, train_rows = train.map_batches(repeat_rows, fn_kwargs={"plan": plan}), plan.total_rows
    # After the repetition, so that the copies of a row land in different batches.
    train = shuffled_every_epoch(train, config.data, config.seed)
    # Drawn after the repetition, so that every copy of a row gets its own augmentation.
    train = train.with_column(SEED_COLUMN, random(seed=config.seed)).map_batches(
        augment_and_prepare, fn_kwargs={"model_input": backbone.model_input, "augment": config.data.augment})
    val = cached(read_split(source, "val", image_size, data_config), source.num_rows("val"), image_size,
                 config.data.cache).map_batches(prepare, fn_kwargs={"model_input": backbone.model_input})
    return TrainingData(train=train, val=val, train_rows=train_rows)


# Rows per block before "blocks" shuffling puts the blocks in random order: small enough that the
# worker's shuffle buffer (data.shuffle_buffer_rows) holds rows of many blocks, hence of every class.
SHUFFLE_BLOCK_ROWS = 64


def shuffled_every_epoch(train: ray.data.Dataset, data_config, seed: int) -> ray.data.Dataset:
    """The training rows in a new order every epoch, whatever order the source lists them in.

    Class folders and many parquet files list their rows class by class; trained in that order,
    every batch holds one class and the model chases whichever class it is seeing. Ray Data runs
    the dataset again for every epoch, and `RandomSeedConfig(reseed_after_execution=True)` draws
    each run's order from (seed, run count): epoch e repeats on a rerun with the same `seed`, and
    differs from epoch e - 1. Ray Train restores the dataset when it restarts a failed worker
    group, so the epochs after such a restart draw their orders afresh from run count 0.

    "full" is Ray Data's `random_shuffle`: every row may land anywhere, at the price of moving the
    whole split through the object store each epoch. "blocks" cuts the rows into blocks of
    SHUFFLE_BLOCK_ROWS and puts the blocks in random order (no rows move); each training worker
    then mixes them in a shuffle buffer (`local_shuffle_buffer_size`, see worker_data.py).
    """
    order = RandomSeedConfig(seed=derived_seed(seed, "shuffle"), reseed_after_execution=True)
    if data_config.shuffle == "full":
        return train.random_shuffle(seed=order)
    return train.repartition(target_num_rows_per_block=SHUFFLE_BLOCK_ROWS).randomize_block_order(seed=order)


def derived_seed(seed: int, *purpose: str | int) -> int:
    """An independent 32-bit seed for one use of the run's seed (shuffling, a worker's buffer)."""
    words = [seed, *(part if isinstance(part, int) else int.from_bytes(part.encode()[:4], "big") for part in purpose)]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


# Share of the object store that decoded rows may fill under data.cache "auto".
CACHE_SHARE = 0.1


def cached(decoded: ray.data.Dataset, rows: int, image_size: int, cache: str) -> ray.data.Dataset:
    """The decoded rows, materialised in the object store when `cache` allows it.

    Ray Data re-runs a lazy dataset every epoch: reading and decoding every image again, on the
    CPUs that training needs. Ray's training-ingest guide materialises a dataset that fits in the
    object store before its random augmentation; so does this, for uint8 pixels (row_id and label
    are small beside them).
    """
    decoded_bytes = rows * int(np.prod(spatial_shape(image_size)))
    fits = decoded_bytes <= CACHE_SHARE * ray.cluster_resources().get("object_store_memory", 0.0)
    if cache == "always" or (cache == "auto" and fits):
        return decoded.materialize()
    return decoded


def oversampling_plan(source: Source, config):
    """The plan for exactly the rows the epochs will read: the train pieces (after the manifest
    dropped unusable rows) list every row id and label, so no image is read for it."""
    pieces = source.pieces["train"]
    row_ids = [row_id for piece in pieces for row_id in piece["row_ids"]]
    labels = label_array(label for piece in pieces for label in piece["labels"])
    return plan_oversampling(np.asarray(row_ids), labels, config.train.oversample_to, config.seed)


def augment_and_prepare(batch: dict, model_input: ModelInput, augment) -> dict:
    pixels = AUGMENT_BY_SPATIAL_DIMS[model_input.spatial_dims](batch["pixels"], batch[SEED_COLUMN], augment)
    return {"image": to_model_input(pixels, model_input), "label": batch["label"]}


def prepare(batch: dict, model_input: ModelInput) -> dict:
    return {"image": to_model_input(batch["pixels"], model_input), "label": batch["label"]}
