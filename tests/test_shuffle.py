"""The training split reaches the model in a new, seeded order every epoch, whatever order the
source lists its rows in (class folders list them class by class)."""

import numpy as np
import pytest

from medray.config import validate_config
from medray.data.pipeline import derived_seed, read_split, training_data
from medray.data.sources import discover
from medray.models.registry import get_backbone

BATCH = 16


def class_sorted_config(tiny_dataset, shuffle: str, seed: int = 0):
    return validate_config({
        "seed": seed,
        "data": {"source": "folders", "path": str(tiny_dataset / "folders"), "mask_column": None,
                 "shuffle": shuffle, "shuffle_buffer_rows": 64},
        "model": {"input_size": 32}, "train": {"batch_size": BATCH},
    })


def epoch_labels(config, epochs: int) -> list[np.ndarray]:
    """The label of every row in the order each epoch yields them, as a training worker reads them:
    in the dataset's order (Ray Train's ingest preserves it), through the shuffle buffer under
    "blocks" (seeded per epoch as medray.train.loop does)."""
    data = training_data(discover(config.data), get_backbone("baseline_cnn"), 32, config)
    data.train.context.execution_options.preserve_order = True
    orders = []
    for epoch in range(epochs):
        buffer = ({"local_shuffle_buffer_size": config.data.shuffle_buffer_rows,
                   "local_shuffle_seed": derived_seed(config.seed, "buffer", epoch, 0)}
                  if config.data.shuffle == "blocks" else {})
        batches = data.train.iter_batches(batch_size=BATCH, batch_format="numpy", **buffer)
        orders.append(np.concatenate([batch["label"] for batch in batches]))
    return orders


def test_the_folders_source_lists_its_rows_sorted_by_class(tiny_dataset, ray_cluster):
    """The premise of the tests below: without shuffling, batches would hold one class each."""
    config = class_sorted_config(tiny_dataset, "full")
    decoded = read_split(discover(config.data), "train", 32, config.data)
    decoded.context.execution_options.preserve_order = True
    labels = [row["label"] for row in decoded.take_all()]
    assert labels == sorted(labels) and len(set(labels)) == 3


@pytest.mark.parametrize("shuffle", ["full", "blocks"])
def test_every_training_batch_mixes_classes_from_class_sorted_folders(tiny_dataset, ray_cluster, shuffle):
    """60 rows of 3 classes (36 / 15 / 9): a batch of 16 drawn at random holds one class with
    probability below 0.6 ** 15 = 5e-4, so no full batch of two epochs may."""
    config = class_sorted_config(tiny_dataset, shuffle)
    source_counts = np.bincount([row["label"] for row in read_split(discover(config.data), "train", 32,
                                                                    config.data).take_all()])
    assert sorted(source_counts.tolist()) == [9, 15, 36]
    for labels in epoch_labels(config, epochs=2):
        assert np.array_equal(np.bincount(labels), source_counts)  # every row once an epoch
        full_batches = labels[: len(labels) // BATCH * BATCH].reshape(-1, BATCH)
        assert all(len(set(batch.tolist())) > 1 for batch in full_batches), full_batches


def test_epochs_differ_in_order_and_a_rerun_with_the_same_seed_repeats_them(tiny_dataset, ray_cluster):
    first = epoch_labels(class_sorted_config(tiny_dataset, "full", seed=7), epochs=2)
    again = epoch_labels(class_sorted_config(tiny_dataset, "full", seed=7), epochs=2)
    other_seed = epoch_labels(class_sorted_config(tiny_dataset, "full", seed=8), epochs=1)
    assert not np.array_equal(first[0], first[1])
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other_seed[0])
