"""TensorFlow's thread pools in a Ray Train worker, shared out among the workers of a node.

TensorFlow sizes a process's intra-op pool by the machine's cores, not by what Ray reserved: two
workers of the demo on a 2-core laptop ran a 2-thread pool each (4 threads doing ops on 2 cores),
beside Ray Data's tasks, and Eigen's pool threads spin while they wait, taking CPU from the others.
A lone worker keeps TensorFlow's default (the node's cores; once data.cache holds the decoded rows,
Ray Data's per-epoch share is small); workers that share a node split its cores between them.
Inter-op pools are left alone: collective ops block an inter-op thread while they wait for the
other workers, and a pool of one could stall them.
"""

from __future__ import annotations

import os

from medray.keras_setup import tf


def share_intra_op_threads(workers_on_node: int) -> int:
    """Size this process's intra-op pool to its share of the node's cores (at least one thread);
    call before TensorFlow runs its first op. Returns the pool size, 0 for TensorFlow's default."""
    if workers_on_node <= 1:
        return 0
    threads = max(1, (os.cpu_count() or 1) // workers_on_node)
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    return threads
