"""Start or join Ray, and refuse settings that would starve Ray Data of CPUs.

With no RAY_ADDRESS a local Ray instance starts on this machine; under `ray job submit` (or with
RAY_ADDRESS set) the driver joins that cluster instead.
"""

from __future__ import annotations

import json
import os

import ray
from ray.data import DataContext

from medray.errors import MedrayError
from medray.storage import STORAGE_ENV

# Ray's setting for its workers' niceness, read when a local Ray instance starts.
WORKER_NICENESS_ENV = "RAY_worker_niceness"
# Where Ray hands a submitted job's config (and its runtime env) to the driver.
RAY_JOB_CONFIG_JSON_ENV_VAR = "RAY_JOB_CONFIG_JSON_ENV_VAR"

# Workers on a cluster started with `ray start` do not inherit the driver's environment.
WORKER_ENV = {
    **{name: os.environ[name] for name in ("TF_USE_LEGACY_KERAS", "TF_CPP_MIN_LOG_LEVEL")},
    # Ray Train's print patch would echo every epoch line twice on the driver.
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    # Ray Train's controller polls its workers every 2 s by default, so a finished training waited
    # up to 2 s to be noticed; a poll is one small call per worker.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
}


def worker_env() -> dict[str, str]:
    """WORKER_ENV plus the object-storage settings the driver has (credentials, endpoint): every
    worker reads data and writes checkpoints itself, so it needs the same ones.

    Variables the submitted job's runtime env already sets (`ray job submit --runtime-env-json
    '{"env_vars": {...}}'`) reach every worker from there; Ray refuses to merge a key set twice.
    """
    job_config = json.loads(os.environ.get(RAY_JOB_CONFIG_JSON_ENV_VAR, "{}"))
    from_job = (job_config.get("runtime_env") or {}).get("env_vars") or {}
    env = {**WORKER_ENV, **{name: os.environ[name] for name in STORAGE_ENV if name in os.environ}}
    return {name: value for name, value in env.items() if name not in from_job}


def quiet_ray_data() -> None:
    """Ray Data's progress bars off in this process (the driver, or a Tune trial, whose datasets'
    actors copy its DataContext): medray draws one bar per long stage itself (medray.console);
    Ray Data's bars, redrawn for every epoch and split, would only fill the console and the log."""
    DataContext.get_current().enable_progress_bars = False


def connect(scaling) -> None:
    quiet_ray_data()
    if not ray.is_initialized():
        if not os.environ.get("RAY_ADDRESS"):
            # Ray starts its workers at niceness 15 (its `worker_niceness`), below every ordinary
            # process: on a shared laptop any busy program then takes the CPUs that medray's
            # training, data and explain workers were given (beside four busy nice-0 processes an
            # explain actor got 2 % of a core and took minutes to import TensorFlow). The local Ray
            # medray starts runs its workers at the driver's priority; a cluster keeps its own.
            os.environ.setdefault(WORKER_NICENESS_ENV, "0")
        ray.init(
            address=os.environ.get("RAY_ADDRESS"),
            runtime_env={"env_vars": worker_env()},
            # Workers' output reaches the driver, whose stdout medray.console sends to <run>/logs/.
            log_to_driver=True,
        )
    check_cpus_for_data(scaling, ray.cluster_resources().get("CPU", 0.0))


def check_cpus_for_data(scaling, cluster_cpus: float) -> None:
    """Training workers must leave `cpus_for_data` CPUs free, or Ray Data can never run."""
    if scaling.use_gpu:
        return
    training = scaling.num_workers * scaling.cpus_per_worker
    left = cluster_cpus - training
    if left < scaling.cpus_for_data:
        raise MedrayError(
            f"scaling: {scaling.num_workers} workers x {scaling.cpus_per_worker} CPU = {training:g} CPUs "
            f"leaves {left:g} of the cluster's {cluster_cpus:g} CPUs for Ray Data, but "
            f"scaling.cpus_for_data={scaling.cpus_for_data:g}; lower scaling.cpus_per_worker or "
            "scaling.num_workers (training would otherwise wait for data forever)"
        )


def remove_leftover_worker_groups() -> None:
    """Free the CPUs of worker groups whose trial ASHA stopped.

    Ray Train's detached cleaner removes such a group's placement group, but it finds the cluster
    by address and fails when several Ray instances share the machine; the group would then hold
    its CPUs for good and the next trial's data (or the test-split evaluation) would wait for them.
    Call it only when no trial of this job runs: every worker group left then is such a leftover.
    """
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

    job_id = ray.get_runtime_context().get_job_id()
    for group_id, group in placement_group_table().items():
        # Tune's own trial groups hold only memory (see `trainable`); worker groups hold CPUs or GPUs.
        holds_workers = any("CPU" in bundle or "GPU" in bundle for bundle in group["bundles"].values())
        if group["state"] == "CREATED" and group_id.endswith(job_id) and holds_workers:
            remove_placement_group(PlacementGroup(PlacementGroupID(bytes.fromhex(group_id))))
