"""A Ray Train worker's Ray Data shard as Keras input under tf.distribute (MultiWorkerMirroredStrategy;
the default strategy when there is one worker).

Ray Data runs a shard's pipeline afresh for every pass over it (the epoch's shuffle, augmentation
and preprocessing), and the first batch of a pass arrives some 0.3 s after it is asked for (1,024
phantoms at 64 px on 2 cores: a sixth of the epoch's fit). `ShardPasses.start` asks for it ahead:
the training loop starts the next epoch's pass as soon as `model.fit` returns, so Ray Data
prepares it while the worker validates, saves its checkpoint and reports; and the validation pass
when `model.fit` starts (started after fit, behind the next epoch's shuffle and augmentation on the
data CPU, validation took 1.4-1.9 s per epoch of the demo instead of 0.4-0.6).

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
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterator

import numpy as np

from tensorflow.python.data.ops import multi_device_iterator_ops

from medray.keras_setup import tf
from medray.task import Task


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


class ShardPasses:
    """A worker's Ray Data shard as one distributed `tf.data` dataset; every `model.fit` or
    `model.evaluate` over it is one pass over the shard, in batches of `per_worker_batch` rows
    (image: (batch, H, W, channels) float32 model input; the label as the task encodes it for Keras:
    one-hot (batch, K), (batch, 1) for a sigmoid unit, (batch, K) label vectors; a per-sample class
    weight (batch,) float32).

    Ray Data has already given each worker its own rows (an equal split). Handing the dataset to
    Keras plainly would let tf.distribute treat its batch as the global one and split it again
    across workers; `distribute_datasets_from_function` uses each worker's batches as they are.
    Class weights ride along as per-sample weights: Keras refuses `class_weight` for such datasets.

    Call `start` before each pass (earlier is better: Ray Data begins executing it at once) and
    `discard` for a started pass that will not be read. Every worker must start the same passes:
    Ray Data's split hands out an epoch only when all workers have asked for it.
    """

    def __init__(self, strategy, shard, rows: int, per_worker_batch: int, workers: int, task: Task,
                 class_weights: list[float], image_shape: tuple[int, int, int]):
        self._shard, self._batch_size = shard, per_worker_batch
        self._pending: tuple[Iterator[dict], Future] | None = None
        self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="medray-next-pass")
        self.steps = max(1, math.ceil((rows // workers) / per_worker_batch))
        signature = (tf.TensorSpec((None, *image_shape), tf.float32),
                     tf.TensorSpec((None, *task.label_shape), tf.int32))

        def worker_dataset(_) -> tf.data.Dataset:
            dataset = tf.data.Dataset.from_generator(self._next_pass, output_signature=signature)
            return without_autotune(
                dataset.map(lambda image, label: (image, *task.keras_targets(label, class_weights))))

        self.dataset = strategy.distribute_datasets_from_function(worker_dataset)

    @property
    def started(self) -> bool:
        return self._pending is not None

    def start(self, shuffle_buffer_rows: int | None = None, shuffle_seed: int | None = None) -> None:
        """Begin the next pass now: Ray Data executes it and the first batch is fetched in the background.

        `shuffle_buffer_rows`: rows Ray Data holds to draw each batch from at random (seeded by
        `shuffle_seed`), for data.shuffle "blocks"; None keeps the shard's order.
        Raises RuntimeError if a started pass has not been read or discarded.
        """
        if self._pending is not None:
            raise RuntimeError("ShardPasses.start: the pass started before has not been read or discarded")
        batches = iter(self._shard.iter_batches(batch_size=self._batch_size, batch_format="numpy",
                                                local_shuffle_buffer_size=shuffle_buffer_rows,
                                                local_shuffle_seed=shuffle_seed))
        self._pending = (batches, self._background.submit(next, batches, None))

    def discard(self) -> None:
        """Drop a started pass that will not be read (training stopped); Ray Data stops executing it."""
        if self._pending is not None:
            batches, first = self._pending
            self._pending = None
            first.result()
            batches.close()

    def _next_pass(self):
        if self._pending is None:
            raise RuntimeError("ShardPasses: a pass was read without start()")
        batches, first = self._pending
        self._pending = None
        batch = first.result()
        try:
            while batch is not None:
                yield (np.asarray(batch["image"], dtype=np.float32), np.asarray(batch["label"], dtype=np.int32))
                batch = next(batches, None)
        finally:
            batches.close()
