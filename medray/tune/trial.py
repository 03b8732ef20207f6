"""One sweep trial: the Tune function trainable that runs one Ray Train run.

A trial maps onto Ray Train like this: Tune starts this function in a small actor (no CPU of its
own), the function builds the trial's Ray Datasets and a TensorflowTrainer with
`resources.workers_per_trial` workers, and Ray Train V2's `TuneReportCallback` forwards the
chief worker's per-epoch report (metrics and checkpoint path) to Tune, where ASHA reads it.
Everything a trial writes lands in `<sweep>/<trial id>/`, Tune's own folder for that trial.

With cross-validation (sweep key `cross_validation.folds`) a trial trains its K folds one after the
other instead, each a Ray Train run, and reports to Tune once per fold (see medray.tune.folds).
"""

from __future__ import annotations

import json

from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from medray import storage
from medray.config import RunConfig, to_yaml
from medray.data.sources import Source
from medray.job import prepare_job
from medray.run_folder import publish, scratch_folder
from medray.tune.space import trial_config

TRIAL_CONFIG = "config.yaml"
# Written when a trial's training ends by itself (budget or early stopping); a trial that ASHA
# stopped, or that failed, has none.
OUTCOME = "outcome.json"
# A cross-validated trial's folds so far: each fold's validation metrics at its exported epoch,
# their mean and standard deviation, and how many folds were planned.
FOLD_RESULTS = "folds.json"
FOLD_METRICS = ["val_auc", "val_accuracy", "val_loss"]


def run_trial(params: dict, base: dict, source: Source, sweep_dir: str, folds: list[Source] | None = None) -> None:
    """`sweep_dir`: the sweep's folder, a local path or a URI; a trial in object storage writes a
    scratch copy on its own node, uploaded as it goes, and checkpoints straight to the bucket.
    `folds`: one source per fold (medray.tune.folds.fold_sources) to cross-validate on instead."""
    from medray.cluster import quiet_ray_data
    from medray.run import pretrained_model
    from medray.train.trainer import train_model

    quiet_ray_data()  # a trial runs in its own Ray actor, with Ray Data's default context
    trial_id = tune.get_context().get_trial_id()
    folder = scratch_folder(storage.join(sweep_dir, trial_id))
    trial_dir = folder.local
    config = trial_config(RunConfig.model_validate(base), params, source=f"trial {trial_id}")
    config = config.model_copy(update={"output": config.output.model_copy(update={"run_id": trial_id})})
    (trial_dir / TRIAL_CONFIG).write_text(to_yaml(config))
    publish(folder)  # a trial that ASHA stops never reaches the end of this function
    if folds:
        cross_validate(config, folds, folder)
        return

    job = prepare_job(config, source=source)  # discovered once by the sweep, for every trial
    initial_model = pretrained_model(job.backbone, job.image_size, job.task.head, config.model)
    # A resumed trial finds its Ray Train run under the same storage path and continues it.
    outcome = train_model(config, source, job.training_data(), job.image_size, trial_dir, initial_model, job.task,
                          callbacks=[TuneReportCallback()], checkpoints=folder.checkpoints)
    (trial_dir / OUTCOME).write_text(json.dumps({
        "epochs": len(outcome.history), "exported_epoch": outcome.exported_epoch, "stop_reasons": outcome.stop_reasons,
    }, indent=2))
    publish(folder)


def cross_validate(config: RunConfig, folds: list[Source], folder) -> None:
    """Train fold 1..K in turn (each on the other folds, early-stopped and exported by its held-out
    fold); after each, write folds.json and report the mean over the folds done so far to Tune,
    with `fold` as ASHA's time. A resumed trial skips the folds its folds.json already holds."""
    from medray.run import pretrained_model
    from medray.train.trainer import train_model
    from medray.tune.folds import fold_summary

    trial_dir = folder.local
    path = trial_dir / FOLD_RESULTS
    done = json.loads(path.read_text())["folds"] if path.is_file() else []
    for k in range(len(done) + 1, len(folds) + 1):
        fold = folds[k - 1]
        job = prepare_job(config, source=fold)
        initial_model = pretrained_model(job.backbone, job.image_size, job.task.head, config.model)
        fold_dir = trial_dir / f"fold-{k}"
        fold_dir.mkdir(exist_ok=True)
        outcome = train_model(config, fold, job.training_data(), job.image_size, fold_dir, initial_model, job.task,
                              checkpoints=storage.join(folder.checkpoints, f"fold-{k}"))
        outcome.model_path.unlink()  # a fold's model only scores the configuration; the winner is trained again
        done.append({"fold": k, "train_rows": fold.num_rows("train"), "val_rows": fold.num_rows("val"),
                     "epochs": len(outcome.history), "exported_epoch": outcome.exported_epoch,
                     "stop_reasons": outcome.stop_reasons,
                     **{name: float(outcome.exported_metrics[name]) for name in FOLD_METRICS
                        if outcome.exported_metrics.get(name) is not None}})
        summary = fold_summary(done, FOLD_METRICS)
        path.write_text(json.dumps({"folds_planned": len(folds), "folds": done, **summary}, indent=2))
        publish(folder)
        tune.report({"fold": k, **summary})
