"""A worker's input pipeline runs without tf.data's autotuner, down to tf.distribute's per-device
datasets: destroying an autotuned iterator at the end of every epoch's fit waited for the
autotuner's sleeping thread (seconds per epoch; see medray/train/worker_data.py)."""

from __future__ import annotations

import numpy as np
from tensorflow.python.data.ops import multi_device_iterator_ops

from medray.keras_setup import tf
from medray.train.worker_data import per_replica_batches


def test_the_datasets_tf_distribute_builds_per_device_are_not_autotuned():
    source = tf.data.Dataset.range(8).batch(4)
    iterator = multi_device_iterator_ops.OwnedMultiDeviceIterator(source, ["/cpu:0"])
    # TensorFlow internals on purpose: medray's wrapper lives there, and this fails if it stops applying.
    device_datasets = [device_iterator._dataset for device_iterator in iterator._device_iterators]
    assert [dataset.options().autotune.enabled for dataset in device_datasets] == [False]
    assert np.array_equal(iterator.get_next()[0].numpy(), [0, 1, 2, 3])


def test_a_workers_batches_are_not_autotuned_and_carry_one_hot_labels_and_class_weights(ray_cluster):
    shard = ray_cluster.data.from_items(
        [{"image": np.full((2, 2, 1), row, np.float32), "label": row % 2} for row in range(6)]).iterator()
    batches, steps = per_replica_batches(tf.distribute.get_strategy(), shard, rows=6, per_worker_batch=4,
                                         workers=1, num_classes=2, class_weights=[1.0, 3.0])
    assert batches.options().autotune.enabled is False
    assert steps == 2
    labels = np.concatenate([one_hot.numpy() for _, one_hot, _ in batches])
    weights = np.concatenate([weight.numpy() for _, _, weight in batches])
    assert labels.tolist() == [[1, 0], [0, 1]] * 3
    assert weights.tolist() == [1.0, 3.0] * 3
