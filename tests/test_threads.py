"""Training workers that share a node split its cores between their TensorFlow pools."""

import os
import subprocess
import sys

# One fresh process: TensorFlow takes thread settings only before its first op.
PROBE = """
from medray.keras_setup import tf
from medray.train.threads import share_intra_op_threads
for workers in (1, 64, 2):
    print(share_intra_op_threads(workers), tf.config.threading.get_intra_op_parallelism_threads())
"""


def test_workers_sharing_a_node_split_its_cores_and_a_lone_worker_keeps_the_default():
    probe = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    pools = [[int(value) for value in line.split()] for line in probe.stdout.splitlines()]
    cores = os.cpu_count()
    assert pools == [[0, 0],  # a lone worker: TensorFlow's default, all cores
                     [1, 1],  # more workers than cores: one thread each
                     [max(1, cores // 2)] * 2]


def test_the_local_ray_medray_starts_runs_its_workers_at_the_drivers_priority(ray_cluster):
    # Ray's default (niceness 15) lets any busy nice-0 program on the machine starve the workers.
    @ray_cluster.remote
    def niceness() -> int:
        return os.nice(0)

    assert ray_cluster.get(niceness.remote()) == os.nice(0)
