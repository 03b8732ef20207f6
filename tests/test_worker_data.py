"""A worker's input pipeline runs without tf.data's autotuner, down to tf.distribute's per-device
datasets: destroying an autotuned iterator at the end of every epoch's fit waited for the
autotuner's sleeping thread (seconds per epoch; see medray/train/worker_data.py). A pass over the
shard can be started before it is read (the next epoch's, during validation), or discarded."""

from __future__ import annotations

import numpy as np
import pytest
from tensorflow.python.data.ops import multi_device_iterator_ops

from medray.task import SingleLabelTask
from medray.keras_setup import tf
from medray.train.worker_data import ShardPasses


def test_the_datasets_tf_distribute_builds_per_device_are_not_autotuned():
    source = tf.data.Dataset.range(8).batch(4)
    iterator = multi_device_iterator_ops.OwnedMultiDeviceIterator(source, ["/cpu:0"])
    # TensorFlow internals on purpose: medray's wrapper lives there, and this fails if it stops applying.
    device_datasets = [device_iterator._dataset for device_iterator in iterator._device_iterators]
    assert [dataset.options().autotune.enabled for dataset in device_datasets] == [False]
    assert np.array_equal(iterator.get_next()[0].numpy(), [0, 1, 2, 3])


def shard_passes(ray_cluster, rows: int = 6) -> ShardPasses:
    shard = ray_cluster.data.from_items(
        [{"image": np.full((2, 2, 1), row, np.float32), "label": row % 2} for row in range(rows)]).iterator()
    return ShardPasses(tf.distribute.get_strategy(), shard, rows=rows, per_worker_batch=4, workers=1, task=SingleLabelTask(("a", "b")),
                       class_weights=[1.0, 3.0], image_shape=(2, 2, 1))


def read_pass(passes: ShardPasses) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    batches = list(passes.dataset)
    return tuple(np.concatenate([batch[part].numpy() for batch in batches]) for part in range(3))


def test_a_workers_batches_are_not_autotuned_and_carry_one_hot_labels_and_class_weights(ray_cluster):
    passes = shard_passes(ray_cluster)
    assert passes.dataset.options().autotune.enabled is False
    assert passes.steps == 2
    passes.start()
    images, labels, weights = read_pass(passes)
    assert images[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4, 5]
    assert labels.tolist() == [[1, 0], [0, 1]] * 3
    assert weights.tolist() == [1.0, 3.0] * 3


def test_a_pass_started_ahead_is_read_whole_and_every_pass_needs_its_own_start(ray_cluster):
    passes = shard_passes(ray_cluster)
    passes.start()
    assert passes.started
    first = read_pass(passes)[0]
    assert not passes.started
    # The next epoch's pass, started while the worker would be validating; then one more, discarded
    # as when early stopping ends training: the one after it still reads every row.
    passes.start()
    second = read_pass(passes)[0]
    passes.start()
    with pytest.raises(RuntimeError, match="has not been read or discarded"):
        passes.start()
    passes.discard()
    assert not passes.started
    passes.start()
    third = read_pass(passes)[0]
    assert sorted(first[:, 0, 0, 0]) == sorted(second[:, 0, 0, 0]) == sorted(third[:, 0, 0, 0]) == list(range(6))
    with pytest.raises(Exception, match="a pass was read without start"):
        read_pass(passes)
