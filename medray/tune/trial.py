"""One sweep trial: the Tune function trainable that runs one Ray Train run.

A trial maps onto Ray Train like this: Tune starts this function in a small actor (no CPU of its
own), the function builds the trial's Ray Datasets and a TensorflowTrainer with
`resources.workers_per_trial` workers, and Ray Train V2's `TuneReportCallback` forwards the
chief worker's per-epoch report (metrics and checkpoint path) to Tune, where ASHA reads it.
Everything a trial writes lands in `<sweep>/<trial id>/`, Tune's own folder for that trial.
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


def run_trial(params: dict, base: dict, source: Source, sweep_dir: str) -> None:
    """`sweep_dir`: the sweep's folder, a local path or a URI; a trial in object storage writes a
    scratch copy on its own node, uploaded as it goes, and checkpoints straight to the bucket."""
    from medray.run import pretrained_model
    from medray.train.trainer import train_model

    trial_id = tune.get_context().get_trial_id()
    folder = scratch_folder(storage.join(sweep_dir, trial_id))
    trial_dir = folder.local
    config = trial_config(RunConfig.model_validate(base), params, source=f"trial {trial_id}")
    config = config.model_copy(update={"output": config.output.model_copy(update={"run_id": trial_id})})
    (trial_dir / TRIAL_CONFIG).write_text(to_yaml(config))
    publish(folder)  # a trial that ASHA stops never reaches the end of this function

    job = prepare_job(config, source=source)  # discovered once by the sweep, for every trial
    initial_model = pretrained_model(job.backbone, job.image_size, job.task.head, config.model)
    # A resumed trial finds its Ray Train run under the same storage path and continues it.
    outcome = train_model(config, source, job.training_data(), job.image_size, trial_dir, initial_model, job.task,
                          callbacks=[TuneReportCallback()], checkpoints=folder.checkpoints)
    (trial_dir / OUTCOME).write_text(json.dumps({
        "epochs": len(outcome.history), "exported_epoch": outcome.exported_epoch, "stop_reasons": outcome.stop_reasons,
    }, indent=2))
    publish(folder)
