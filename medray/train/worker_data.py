"""A Ray Train worker's Ray Data shard as Keras input under MultiWorkerMirroredStrategy.

Every epoch is one `model.fit` over a fresh `tf.data` iterator, and destroying an iterator whose
tf.data autotuner is on waits until the autotuner's optimisation thread wakes up: its sleeps double
from 10 ms, so fits ended at 5.1, 10.2, 20.5 or 41.0 s after they started, with training long done
and the CPUs idle (measured on 4,096 phantoms: 7.6 s epochs that took 10.3 s, some 20.5 s). Nothing in these
pipelines has a tunable parameter (Ray Data batches and prefetches; the map is sequential), so
autotuning is switched off: in medray's own pipeline by its options, and in the per-device
datasets that tf.distribute builds behind it, which take no options from their source.
"""

from __future__ import annotations

import math

from tensorflow.python.data.ops import multi_device_iterator_ops

from medray.keras_setup import tf


def without_autotune(dataset: tf.data.Dataset) -> tf.data.Dataset:
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def _device_datasets_without_autotune(create_device_dataset):
    def create(*args, **kwargs):
        return without_autotune(create_device_dataset(*args, **kwargs))

    create.medray_without_autotune = True
    return create


if not getattr(multi_device_iterator_ops._create_device_dataset, "medray_without_autotune", False):
    multi_device_iterator_ops._create_device_dataset = _device_datasets_without_autotune(
        multi_device_iterator_ops._create_device_dataset)


def per_replica_batches(strategy, shard, rows: int, per_worker_batch: int, workers: int, num_classes: int,
                        class_weights: list[float], shuffle_buffer_rows: int | None = None,
                        shuffle_seed: int | None = None):
    """This worker's Ray Data shard as batches of `per_worker_batch`, and the steps in an epoch.

    Ray Data has already given each worker its own rows (an equal split). Handing the dataset to
    Keras plainly would let tf.distribute treat its batch as the global one and split it again
    across workers; `distribute_datasets_from_function` uses each worker's batches as they are.
    Class weights ride along as per-sample weights: Keras refuses `class_weight` for such datasets.
    `shuffle_buffer_rows`: rows Ray Data holds to draw each batch from at random (seeded by
    `shuffle_seed`), for data.shuffle "blocks"; None keeps the shard's order.
    """
    weights = tf.constant(class_weights or [1.0] * num_classes, dtype=tf.float32)

    def worker_dataset(_) -> tf.data.Dataset:
        dataset = shard.to_tf(feature_columns="image", label_columns="label", batch_size=per_worker_batch,
                              local_shuffle_buffer_size=shuffle_buffer_rows, local_shuffle_seed=shuffle_seed)
        return without_autotune(
            dataset.map(lambda image, label: (image, tf.one_hot(label, num_classes), tf.gather(weights, label))))

    steps = max(1, math.ceil((rows // workers) / per_worker_batch))
    return strategy.distribute_datasets_from_function(worker_dataset), steps
