"""One line per epoch on the driver's console, however many workers train.

Ray Train calls a `UserCallback` in its controller process (an actor), not in the driver: the
callback hands rank 0's reported metrics to the driver through a Ray queue, and a driver thread
prints them while `trainer.fit()` blocks.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import ray
import ray.train
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from ray.util.queue import Empty, Queue

from medray.console import say


class EpochMetrics(ray.train.UserCallback):
    """Runs in Ray Train's controller: forwards each epoch's metrics (rank 0's) to the driver."""

    def __init__(self, queue: Queue):
        self.queue = queue

    def after_report(self, run_context, metrics: list[dict], checkpoint) -> None:
        self.queue.put(dict(metrics[0]))


@contextlib.contextmanager
def epoch_lines(epochs: int) -> Iterator[EpochMetrics]:
    """A Ray Train callback whose epochs the driver prints as `epoch 3/8  loss ...` lines."""
    from medray.train.loop import format_epoch

    # The queue's actor takes no training CPU, and lives on the driver's node: on any other node it
    # would die with that node, and Ray Train's controller with it (a lost worker node must only
    # restart the worker group from its last checkpoint).
    queue = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": NodeAffinitySchedulingStrategy(
        node_id=ray.get_runtime_context().get_node_id(), soft=False)})
    done = threading.Event()

    def show() -> None:
        while True:
            try:
                say(format_epoch(queue.get(timeout=0.5), epochs))
            except Empty:
                if done.is_set():
                    return

    printer = threading.Thread(target=show, daemon=True)
    printer.start()
    try:
        yield EpochMetrics(queue)
    finally:
        done.set()
        printer.join(timeout=30)
        queue.shutdown()
