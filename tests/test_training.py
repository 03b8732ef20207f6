"""Data-parallel training that provably syncs, survives a worker crash and a killed driver."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
import ray.train
from ray.train.tensorflow import TensorflowTrainer

from medray.task import SingleLabelTask
from medray.cli import main
from medray.config import load_config, to_yaml
from medray.errors import MedrayError
from medray.run_folder import create_run_folder, mark_finished
from medray.train.loop import CRASH_AFTER_EPOCH_ENV

from conftest import DEMO_CONFIG, ROOT, cli_args, tiny_overrides

GLOBAL_BATCH, STEPS = 16, 4
# Ray workers cannot import this test module, so its train function travels by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def equivalence_loop(config: dict) -> None:
    """Train a BN-free model on fixed global batches; worker r takes rows r, r+N, ... of each."""
    import tempfile

    from medray.config import validate_config
    from medray.keras_setup import keras, tf
    from medray.train.loop import compile_for_phase, replica_weight_spread
    from medray.train.progress import Progress

    # Before any other TensorFlow call: collective ops are configured once, at startup.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    context = ray.train.get_context()
    rank, workers = context.get_world_rank(), context.get_world_size()
    rng = np.random.default_rng(0)
    images = rng.random((GLOBAL_BATCH * STEPS, 8)).astype(np.float32)
    labels = np.eye(3, dtype=np.float32)[rng.integers(0, 3, GLOBAL_BATCH * STEPS)]
    batches = [slice(step * GLOBAL_BATCH, (step + 1) * GLOBAL_BATCH) for step in range(STEPS)]
    local_x = np.concatenate([images[b][rank::workers] for b in batches])
    local_y = np.concatenate([labels[b][rank::workers] for b in batches])
    batches_per_replica = strategy.distribute_datasets_from_function(
        lambda _: tf.data.Dataset.from_tensor_slices((local_x, local_y)).batch(GLOBAL_BATCH // workers))

    with strategy.scope():
        keras.utils.set_random_seed(7)
        inputs = keras.Input((8,))
        hidden = keras.layers.Dense(16, activation="relu")(inputs)
        model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="probabilities")(hidden))
        run = validate_config({"data": {"path": "unused"}, "train": {"lr": 0.05}})
        compile_for_phase(model, Progress(), run, SingleLabelTask(("a", "b", "c")))
    model.fit(batches_per_replica, epochs=1, steps_per_epoch=STEPS, verbose=0)
    spread = replica_weight_spread(model, strategy)
    with tempfile.TemporaryDirectory() as directory:
        np.savez(Path(directory) / "weights.npz", *model.get_weights())
        ray.train.report({"spread": spread},
                         checkpoint=ray.train.Checkpoint.from_directory(directory) if rank == 0 else None)


def trained_weights(workers: int, storage: Path) -> tuple[list[np.ndarray], float]:
    result = TensorflowTrainer(
        equivalence_loop,
        scaling_config=ray.train.ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 0.5}),
        run_config=ray.train.RunConfig(name=f"workers-{workers}", storage_path=str(storage)),
    ).fit()
    with result.checkpoint.as_directory() as directory:
        saved = np.load(Path(directory) / "weights.npz")
        return [saved[key] for key in saved.files], result.metrics["spread"]


def test_two_workers_stay_in_sync_and_match_one_worker_on_the_same_global_batches(ray_cluster, tmp_path):
    one, _ = trained_weights(1, tmp_path)
    two, spread = trained_weights(2, tmp_path)
    assert spread == 0.0  # every replica holds bit-identical weights
    initial_scale = max(np.abs(weights).max() for weights in one)
    for single, parallel in zip(one, two):
        assert np.allclose(single, parallel, atol=1e-5 * initial_scale)
    assert not np.allclose(one[-1], 0)  # the model trained: the comparison is not trivially equal


def run_overrides(data: Path, out: Path, run_id: str, epochs: int) -> list[str]:
    return [*tiny_overrides(data, out), f"output.run_id={run_id}", f"train.epochs={epochs}",
            "train.early_stopping_patience=0", "explain.enabled=false"]


def test_a_worker_crash_resumes_from_the_last_checkpoint_without_redoing_epochs(
        ray_cluster, tiny_dataset, tmp_path, monkeypatch):
    flag = tmp_path / "crashed"
    monkeypatch.setenv(CRASH_AFTER_EPOCH_ENV, f"2:{flag}")
    assert main(cli_args(run_overrides(tiny_dataset / "parquet", tmp_path, "crash", epochs=3))) == 0
    assert flag.is_file()  # rank 0 really died after epoch 2
    history = pd.read_csv(tmp_path / "crash" / "history.csv")
    assert list(history["epoch"]) == [1, 2, 3]
    assert (history["replica_weight_spread"] == 0).all()


def committed_state(run_dir: Path) -> dict:
    """The training state of the latest checkpoint Ray Train has registered (a checkpoint folder
    written just before a kill but not yet in the snapshot does not count, and is redone)."""
    snapshot = run_dir / "checkpoints" / "train" / "checkpoint_manager_snapshot.json"
    try:
        latest = json.loads(snapshot.read_text())["latest_checkpoint_result"]["checkpoint_dir_name"]
    except (OSError, ValueError, KeyError, TypeError):  # not written yet, or mid-write
        return {"history": []}
    return json.loads((snapshot.parent / latest / "state.json").read_text())


def test_a_killed_driver_is_resumed_by_name_and_keeps_its_finished_epochs(ray_cluster, tiny_dataset, tmp_path):
    run_dir = tmp_path / "killed"
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    driver = subprocess.Popen(
        [sys.executable, "-m", "medray", *cli_args(run_overrides(tiny_dataset / "parquet", tmp_path, "killed", 5))],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and len(committed_state(run_dir)["history"]) < 2:
        time.sleep(1)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray it started, mid-training
    driver.wait()
    before = committed_state(run_dir)["history"]
    assert 2 <= len(before) < 5

    assert main(["resume", str(run_dir)]) == 0
    history = pd.read_csv(run_dir / "history.csv")
    assert list(history["epoch"]) == [1, 2, 3, 4, 5]
    finished = pd.DataFrame(before)
    assert np.allclose(history["loss"][: len(before)], finished["loss"])  # kept, not trained again


def test_a_run_id_in_use_resumes_only_with_its_own_config_and_never_once_finished(tmp_path):
    overrides = run_overrides(tmp_path / "data", tmp_path, "again", epochs=2)
    folder = create_run_folder(load_config(DEMO_CONFIG, overrides))
    (folder.local / "config.yaml").write_text(to_yaml(load_config(DEMO_CONFIG, overrides)))  # as run_job saves it
    with pytest.raises(MedrayError, match=r"train\.lr 0\.002 -> 0\.5\).*medray resume .*again.*new output\.run_id"):
        create_run_folder(load_config(DEMO_CONFIG, [*overrides, "train.lr=0.5"]))
    assert create_run_folder(load_config(folder.local / "config.yaml")) == folder  # `medray resume` continues it
    assert create_run_folder(load_config(DEMO_CONFIG, overrides)) == folder  # so does the same command again
    mark_finished(folder)
    with pytest.raises(MedrayError, match="finished run"):
        create_run_folder(load_config(folder.local / "config.yaml"))
    assert (folder.local / "_SUCCESS").is_file()


def test_early_stopping_ends_two_workers_whose_next_epoch_was_already_started(
        ray_cluster, tiny_dataset, tmp_path, capsys):
    # Each worker starts its next epoch's pass over the data before validating (worker_data.ShardPasses);
    # when validation then stops training, both must drop that pass and the run must finish.
    # A learning rate of 1e-9 without batch norm leaves every prediction as it was: validation
    # accuracy cannot improve after epoch 1, so patience 1 stops training after epoch 2 of 3.
    overrides = [*run_overrides(tiny_dataset / "parquet", tmp_path, "stopped", epochs=3),
                 "train.early_stopping_patience=1", "train.monitor=val_accuracy", "train.lr=1e-9",
                 "train.lr_plateau_patience=0", "model.batch_norm=false", "report.enabled=false"]
    assert main(cli_args(overrides)) == 0
    history = pd.read_csv(tmp_path / "stopped" / "history.csv")
    assert list(history["epoch"]) == [1, 2]
    assert (history["replica_weight_spread"] == 0).all()
    assert "phase 1 stopped early at epoch 2" in capsys.readouterr().out


def test_transfer_learning_runs_its_two_phases_through_the_epochs_started_ahead(ray_cluster, tiny_dataset, tmp_path):
    # Phase one trains the head over a frozen MobileNetV2, phase two unfreezes its top layers at the
    # fine-tuning rate; the pass over the data for epoch 2 is started before the phase changes.
    overrides = [*run_overrides(tiny_dataset / "parquet", tmp_path, "two-phases", epochs=1),
                 "model.backbone=mobilenet_v2", "train.fine_tune.epochs=1", "train.fine_tune.layers=10",
                 "train.fine_tune.lr=2e-5", "report.enabled=false"]
    assert main(cli_args(overrides)) == 0
    history = pd.read_csv(tmp_path / "two-phases" / "history.csv")
    assert list(history["epoch"]) == [1, 2] and list(history["phase"]) == [1, 2]
    assert history["lr"].tolist() == [0.002, 2e-5]  # the demo config's rate, then fine_tune.lr
    assert (history["replica_weight_spread"] == 0).all()
