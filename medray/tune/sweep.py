"""`medray tune`: search a space of run configs with Ray Tune, then rank, test and report.

    results/<sweep name>/
      sweep.yaml, base.yaml        the sweep and its resolved base run config (all a resume needs)
      <trial id>/                  Tune's folder of each trial: params.json, result.json, config.yaml,
                                   checkpoints/; the winner adds metrics.json and predictions.parquet
                                   (cross-validated: folds.json, fold-<k>/; the winner refit/)
      folds.parquet                cross-validated sweeps: the train+validation rows and their folds
      leaderboard.csv|md|png       every trial, best validation value first
      selection.json, summary.txt  the winner, the split and metric that chose it, its one test evaluation
      best/model.keras, config.yaml  the winner's model and its run config
      report.html

Selection is on the validation split only: trials are ranked, stopped by ASHA and early stopping,
and their exported epoch picked by the sweep's validation metric. The test split is then read once,
for the winner alone, so that no test score can take part in any choice.

With `cross_validation.folds: K` the trials are scored instead by stratified K-fold
cross-validation over train + validation (medray.tune.folds): the mean over the held-out folds
ranks them, and ASHA's rungs count folds. The winner is then trained once more with its config on
the dataset's own split (see `refit_and_test`) and that model alone is evaluated on the test split.
"""

from __future__ import annotations

import itertools
import json
import posixpath
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import yaml
from ray import tune

from medray import console, storage
from medray.cluster import check_cpus_for_data, connect, remove_leftover_worker_groups
from medray.config import RunConfig, ScalingConfig, load_config, to_yaml
from medray.data.sources import Source, discover
from medray.errors import MedrayError
from medray.evaluate import compute_metrics, predict
from medray.job import prepare_job
from medray.run_folder import RunFolder, download, mark_finished, publish, scratch_folder
from medray.train.loop import CHECKPOINT_MODEL
from medray.tune.folds import check_folds_fit, prepare_folds
from medray.tune.leaderboard import (SWEEP_FILE, build_leaderboard, epoch_history, exported_row, ranked_trials,
                                     trial_dirs, write_leaderboard)
from medray.tune.progress import TrialLog
from medray.tune.space import SweepConfig, epoch_budget, parse_sweep
from medray.tune.trial import FOLD_RESULTS, TRIAL_CONFIG, run_trial

BASE_FILE = "base.yaml"
# Columns Tune adds to every report; history.csv keeps what the training loop reported.
TUNE_BOOKKEEPING = ["config", "timestamp", "checkpoint_dir_name", "done", "training_iteration", "trial_id", "date",
                    "time_this_iter_s", "time_total_s", "pid", "hostname", "node_ip", "time_since_restore",
                    "iterations_since_restore", "checkpoint_path"]
BEST_DIR = "best"
SELECTION_FILE = "selection.json"
SUMMARY_FILE = "summary.txt"
# The cross-validated winner's training on the dataset's own split, and what it was.
REFIT_DIR, REFIT_FILE = "refit", "refit.json"
TRIAL_DRIVER_MEMORY = 256 * 1024**2


@dataclass(frozen=True)
class SweepOutcome:
    sweep_dir: Path  # the driver's copy; the sweep folder itself when output.dir is local
    metric: str
    leaderboard: pd.DataFrame
    report: Path | None
    location: str = ""  # the sweep folder: a local path or a URI
    folds: int | None = None  # K of K-fold cross-validation, None when ranked on the validation split


def run_sweep(sweep: SweepConfig, base: RunConfig) -> SweepOutcome:
    source = discover(base.data)
    if sweep.folds:
        check_folds_fit(sweep.folds, source, base.data)
    folder = search(sweep, base, source)
    return finish_sweep(folder, sweep, base, source)


def search(sweep: SweepConfig, base: RunConfig, source: Source) -> RunFolder:
    """Run every trial (the test split is not read: with cross-validation the trials get only the
    fold sources, whose test split is empty); returns the sweep folder for `finish_sweep`."""
    output_dir = storage.normalise(base.output.dir)
    storage.check_bucket(output_dir, "output.dir")
    # With output.dir in object storage, Tune and every trial write to the bucket, the driver to a scratch copy.
    folder = scratch_folder(storage.join(output_dir, sweep.name))
    sweep_dir = folder.local
    filesystem, sweep_path = storage.resolve(folder.location)
    if tune.Tuner.can_restore(sweep_path, storage_filesystem=filesystem):
        raise MedrayError(f"{folder.location} already holds a sweep; continue it with `medray tune --resume "
                          f"{folder.location}` or start another with --set name=<new name>")
    (sweep_dir / SWEEP_FILE).write_text(yaml.safe_dump(sweep.model_dump(mode="json"), sort_keys=False))
    (sweep_dir / BASE_FILE).write_text(to_yaml(base))
    console.keep_log_in(sweep_dir / "logs")
    connect_for_trials(sweep, base)
    folds = prepare_folds(sweep_dir, source, base.data, sweep.folds, sweep.seed) if sweep.folds else None
    publish(folder)
    tuner = tune.Tuner(
        trainable(base, source, folder.location, folds),
        param_space={key: tune_domain(domain, sweep.search) for key, domain in sweep.space.items()},
        tune_config=tune.TuneConfig(
            metric=sweep.metric, mode=sweep.mode, search_alg=searcher(sweep), scheduler=scheduler(sweep, base),
            num_samples=planned_trials(sweep), max_concurrent_trials=sweep.resources.max_concurrent_trials,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=sweep.name, storage_path=posixpath.dirname(sweep_path), storage_filesystem=filesystem, verbose=0,
            callbacks=[TrialLog(str(sweep_dir), sweep.metric, sweep.mode, folder.location)],
            failure_config=tune.FailureConfig(max_failures=sweep.resources.max_failures),
        ),
    )
    fit_to_the_end(tuner, folder.location, sweep)
    return folder


def fit_to_the_end(tuner, sweep_dir: Path | str, sweep: SweepConfig) -> None:
    """Run the trials; a sweep stopped by Ctrl-C ends here, its state saved for --resume."""
    results = tuner.fit()
    remove_leftover_worker_groups()
    # The searcher creates trials as they may start, so an interrupted sweep also has too few.
    finished = results.num_terminated + results.num_errors
    if finished < len(results) or len(results) < planned_trials(sweep):
        raise MedrayError(f"the sweep was interrupted with trials left; continue it with "
                          f"`medray tune --resume {sweep_dir}`")


def planned_trials(sweep: SweepConfig) -> int:
    if sweep.search != "grid":
        return sweep.samples
    return len(grid_order(sweep))


def resume_sweep(name_or_dir: str, output_dir: Path = Path("results")) -> SweepOutcome:
    """Continue an interrupted sweep: finished trials stay as they are, unfinished and failed ones run again."""
    if storage.is_uri(name_or_dir):
        raise MedrayError(f"--resume {name_or_dir}: resuming a sweep in object storage is not supported yet; "
                          "start it again under another name (--set name=...)")
    sweep_dir = Path(name_or_dir)
    if not (sweep_dir / SWEEP_FILE).is_file():
        sweep_dir = output_dir / name_or_dir
    sweep_dir = sweep_dir.resolve()
    if not (sweep_dir / SWEEP_FILE).is_file() or not tune.Tuner.can_restore(str(sweep_dir)):
        raise MedrayError(f"--resume {name_or_dir}: no sweep to continue there (looked for {SWEEP_FILE} and Tune's "
                          f"state in {sweep_dir}); pass a sweep folder such as results/<sweep name>")
    sweep = parse_sweep(yaml.safe_load((sweep_dir / SWEEP_FILE).read_text()), source=str(sweep_dir / SWEEP_FILE))
    base = load_config(sweep_dir / BASE_FILE)
    console.keep_log_in(sweep_dir / "logs")
    source = discover(base.data)
    connect_for_trials(sweep, base)
    folds = prepare_folds(sweep_dir, source, base.data, sweep.folds, sweep.seed) if sweep.folds else None
    tuner = tune.Tuner.restore(str(sweep_dir), trainable=trainable(base, source, sweep_dir, folds),
                               resume_unfinished=True, resume_errored=True)
    fit_to_the_end(tuner, sweep_dir, sweep)
    return finish_sweep(RunFolder(sweep_dir, str(sweep_dir)), sweep, base, source)


def connect_for_trials(sweep: SweepConfig, base: RunConfig) -> None:
    """The workers of all trials that run at once must leave scaling.cpus_for_data CPUs to Ray Data."""
    connect(base.scaling)
    import ray

    resources, concurrent = sweep.resources, sweep.resources.max_concurrent_trials
    together = ScalingConfig(num_workers=resources.workers_per_trial * concurrent,
                             cpus_per_worker=resources.cpus_per_worker, use_gpu=base.scaling.use_gpu,
                             cpus_for_data=base.scaling.cpus_for_data)
    try:
        check_cpus_for_data(together, ray.cluster_resources().get("CPU", 0.0))
    except MedrayError as error:
        raise MedrayError(f"resources: {concurrent} concurrent trials x {resources.workers_per_trial} workers: "
                          f"{error}; lower resources.max_concurrent_trials") from None


def trainable(base: RunConfig, source: Source, sweep_dir: Path | str, folds: list[Source] | None = None):
    # The trial function only waits for Ray Train, so it holds no CPU; Tune wants a non-empty
    # request, so it reserves a little memory instead. The workers' CPUs are Ray Train's own
    # placement group, and Ray Data's tasks run on the CPUs left free.
    return tune.with_resources(
        tune.with_parameters(run_trial, base=base.model_dump(mode="json"), source=source, sweep_dir=str(sweep_dir),
                             folds=folds),
        {"CPU": 0, "memory": TRIAL_DRIVER_MEMORY})


def trial_dirname(trial) -> str:
    return trial.trial_id


def tune_domain(domain, search: str):
    if domain.kind == "choice":
        return tune.grid_search(domain.choice) if search == "grid" else tune.choice(domain.choice)
    if domain.kind == "uniform":
        return tune.uniform(*domain.uniform)
    return tune.loguniform(*domain.loguniform)


def searcher(sweep: SweepConfig):
    # The searcher creates a trial only when one may start: Tune would otherwise reserve the
    # bundles of waiting trials ahead of time, and those CPUs would be missing for Ray Train.
    concurrent = sweep.resources.max_concurrent_trials
    if sweep.search == "optuna":
        try:
            from ray.tune.search.optuna import OptunaSearch
        except ImportError:
            raise MedrayError("search=optuna needs the optuna package: `pip install optuna`, "
                              "or use search: random") from None
        from ray.tune.search import ConcurrencyLimiter

        return ConcurrencyLimiter(OptunaSearch(seed=sweep.seed), max_concurrent=concurrent)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=sweep.seed, max_concurrent=concurrent,
                                 points_to_evaluate=grid_order(sweep))


def grid_order(sweep: SweepConfig) -> list[dict] | None:
    """A grid's points, each grid pass in its own seeded random order (None for random and optuna).

    ASHA passes whichever trials reach a rung first (it has nothing yet to compare them with). In
    Tune's own grid order the first key's values come in blocks and the lists are usually sorted
    (a learning rate rising), so that head start would go to one corner of the space every time.
    Each point overrides every grid key of `param_space`, so one point is one trial.
    """
    if sweep.search != "grid":
        return None
    keys = list(sweep.space)
    points = [dict(zip(keys, values)) for values in itertools.product(*(sweep.space[key].choice for key in keys))]
    shuffle = random.Random(sweep.seed).shuffle
    passes = []
    for _ in range(sweep.samples):
        shuffle(points)
        passes += [dict(point) for point in points]
    return passes


def scheduler(sweep: SweepConfig, base: RunConfig):
    if not sweep.asha.enabled:
        return None
    from ray.tune.schedulers import ASHAScheduler

    # Rungs count epochs (not Tune iterations, which restart with a resumed trial). max_t lies one
    # epoch beyond the largest budget so that ASHA never ends a trial that is finishing anyway.
    # Cross-validated trials report once per fold: rungs count folds, each a mean over the same folds.
    if sweep.folds:
        return ASHAScheduler(time_attr="fold", max_t=sweep.folds + 1, grace_period=sweep.asha.grace_period,
                             reduction_factor=sweep.asha.reduction_factor)
    return ASHAScheduler(time_attr="epoch", max_t=epoch_budget(sweep, base) + 1,
                         grace_period=sweep.asha.grace_period, reduction_factor=sweep.asha.reduction_factor)


def finish_sweep(folder: RunFolder, sweep: SweepConfig, base: RunConfig, source: Source) -> SweepOutcome:
    download(folder)  # what Tune and the trials wrote to the bucket (not the checkpoints)
    sweep_dir = folder.local
    for trial_dir in trial_dirs(sweep_dir):
        history = epoch_history(trial_dir)
        if not history.empty:
            history.drop(columns=TUNE_BOOKKEEPING, errors="ignore").to_csv(trial_dir / "history.csv", index=False)
    ranked = ranked_trials(build_leaderboard(sweep_dir), sweep)
    if not ranked.empty:
        winner = sweep_dir / ranked["trial"].iloc[0]
        # Once: a resumed sweep whose winner was already tested reads its metrics, not the test split again.
        if not (winner / "metrics.json").is_file():
            if sweep.folds:
                refit_and_test(winner, source, folder.location)
            else:
                evaluate_on_test(winner, sweep, source, folder.location)
        export_best(winner, sweep_dir / BEST_DIR)
    board = write_leaderboard(sweep_dir)
    if not ranked.empty:
        write_selection(sweep_dir, sweep, board)
    report = None
    if base.report.enabled:
        from medray.report import build_report

        report = build_report(sweep_dir, base.report.examples_per_class)
    if base.tracking.enabled:
        from medray.tracking import log_sweep

        log_sweep(sweep_dir, base.tracking, base.output.dir)
    outcome = SweepOutcome(sweep_dir, sweep.metric, board, report, folder.location, sweep.folds)
    (sweep_dir / SUMMARY_FILE).write_text(summarise(outcome))
    mark_finished(folder)
    return outcome


def write_selection(sweep_dir: Path, sweep: SweepConfig, board: pd.DataFrame) -> dict:
    """selection.json: the winner, the split and metric that chose it, and its single test evaluation."""
    best = board.iloc[0]
    tested = sorted(path.parent.name for path in sweep_dir.glob("*/metrics.json"))
    test = json.loads((sweep_dir / best["trial"] / "metrics.json").read_text())
    selection = {
        "winner": best["trial"], "chosen_on": "validation", "metric": sweep.metric, "mode": sweep.mode,
        "value": float(best[sweep.metric]), "exported_epoch": None,
        "trials_ranked": len(ranked_trials(board, sweep)),
        "test": {"split": "test", "trials_evaluated": tested, "accuracy": test.get("accuracy"),
                 "roc_auc": test.get("roc_auc_ovr"), "macro_f1": test.get("macro_f1")},
    }
    if sweep.folds:
        folds = json.loads((sweep_dir / best["trial"] / FOLD_RESULTS).read_text())
        refit = json.loads((sweep_dir / best["trial"] / REFIT_DIR / REFIT_FILE).read_text())
        selection |= {"chosen_on": f"train+validation, {sweep.folds}-fold stratified cross-validation",
                      "value_sd": folds.get(f"{sweep.metric}_sd"), "seed": sweep.seed,
                      "folds": [{key: fold.get(key) for key in ("fold", "train_rows", "val_rows", "exported_epoch",
                                                                sweep.metric)} for fold in folds["folds"]],
                      "exported_epoch": refit["exported_epoch"], "refit": refit}
    else:
        selection["exported_epoch"] = int(best["exported_epoch"])
    (sweep_dir / SELECTION_FILE).write_text(json.dumps(selection, indent=2))
    return selection


def exported_checkpoint(trial_dir: Path, metric: str, mode: str, sweep_location: str = "") -> str:
    """The trial's exported epoch's checkpoint (its best by validation, or its last) among those still
    stored: a local path, or a URI like `sweep_location` (Tune reports paths inside the filesystem)."""
    history = epoch_history(trial_dir)
    if "checkpoint_path" in history.columns:
        models = [storage.join(storage.to_location(path, sweep_location), CHECKPOINT_MODEL)
                  if isinstance(path, str) else None for path in history["checkpoint_path"]]
        history = history[[model is not None and storage.info(model, "checkpoint").type == pafs.FileType.File
                           for model in models]]
        exported = exported_row(trial_dir, history.reset_index(drop=True), metric, mode)
        if exported is not None:
            return storage.to_location(exported["checkpoint_path"], sweep_location)
    raise MedrayError(f"{trial_dir}: no checkpoint left on disk to evaluate; rerun the sweep")


def evaluate_on_test(trial_dir: Path, sweep: SweepConfig, source: Source, sweep_location: str = "") -> dict:
    """The test split, once, with the winning trial's exported checkpoint: metrics.json + predictions.parquet."""
    checkpoint = exported_checkpoint(trial_dir, sweep.metric, sweep.mode, sweep_location)
    (trial_dir / "model.keras").write_bytes(storage.read_bytes(storage.join(checkpoint, CHECKPOINT_MODEL)))
    return test_once(trial_dir, source)


def refit_and_test(trial_dir: Path, source: Source, sweep_location: str = "") -> dict:
    """The cross-validated winner trained once more with its config on the dataset's own split (train,
    its exported epoch and early stopping by the validation split, as `medray run` trains it) into
    `<trial>/refit/`, then evaluated on the test split, once.

    Why the original split rather than all of train + validation: the folds chose a configuration,
    not a model, and the training loop picks its exported epoch and stops early on a validation
    split; trained on train + validation it would need an epoch count carried over from the folds,
    which early stopping and the plateau schedule make a guess. The winner is thus the model a user
    gets from `medray run` with `best/config.yaml`, and its test figure stays comparable with
    benchmarks trained on train and selected on validation (MedMNIST v2). The cost: the validation
    rows (PneumoniaMNIST: 524 of 5,232) do not add to the weights.
    """
    from medray.run import pretrained_model
    from medray.train.trainer import train_model

    config = load_config(trial_dir / TRIAL_CONFIG)
    refit_dir = trial_dir / REFIT_DIR
    refit_dir.mkdir(exist_ok=True)
    job = prepare_job(config, source=source)
    initial_model = pretrained_model(job.backbone, job.image_size, job.task.head, config.model)
    checkpoints = (storage.join(sweep_location, trial_dir.name, REFIT_DIR, "checkpoints")
                   if storage.is_uri(sweep_location) else None)
    outcome = train_model(config, source, job.training_data(), job.image_size, refit_dir, initial_model, job.task,
                          checkpoints=checkpoints)
    shutil.copyfile(outcome.model_path, trial_dir / "model.keras")
    (refit_dir / REFIT_FILE).write_text(json.dumps({
        "trained_on": "train", "epoch_chosen_on": "validation", "epochs": len(outcome.history),
        "exported_epoch": outcome.exported_epoch, "stop_reasons": outcome.stop_reasons,
        config.train.monitor: outcome.exported_metrics.get(config.train.monitor),
    }, indent=2))
    return test_once(trial_dir, source)


def test_once(trial_dir: Path, source: Source) -> dict:
    """Predict the test split with `<trial>/model.keras`: metrics.json + predictions.parquet."""
    config = load_config(trial_dir / TRIAL_CONFIG)
    job = prepare_job(config, source=source)
    predictions = predict(job.read_split("test"), (trial_dir / "model.keras").read_bytes(), job.backbone.name,
                          job.task, config.explain.batch_size, config.explain.concurrency)
    predictions.to_parquet(trial_dir / "predictions.parquet", index=False)
    metrics = compute_metrics(predictions, job.task)
    (trial_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def export_best(trial_dir: Path, best_dir: Path) -> None:
    best_dir.mkdir(exist_ok=True)
    shutil.copyfile(trial_dir / "model.keras", best_dir / "model.keras")
    shutil.copyfile(trial_dir / TRIAL_CONFIG, best_dir / TRIAL_CONFIG)
    (best_dir / "trial.txt").write_text(f"{trial_dir.name}\n")


def summarise(outcome: SweepOutcome) -> str:
    board, metric = outcome.leaderboard, outcome.metric
    lines = [f"medray tune {outcome.sweep_dir.name}: {len(board)} trials, "
             + ", ".join(f"{count} {reason}" for reason, count in board["stop_reason"].value_counts().items())]
    if not board.empty and board["chosen_by"].iloc[0]:
        best = board.iloc[0]
        if outcome.folds:
            lines.append(f"  best       {best['trial']}, chosen by {metric} {best[metric]:.4f} ± "
                         f"{best[metric + '_sd']:.4f} (mean ± SD over {outcome.folds}-fold stratified "
                         "cross-validation on train+validation; the test split was not read)")
            lines.append("  refit      trained again on the train split, its epoch chosen on the validation split")
        else:
            lines.append(f"  best       {best['trial']}, chosen on the validation split by {metric} {best[metric]:.4f}")
        if pd.notna(best.get("test_accuracy")):
            auc = "n/a" if pd.isna(best.get("test_auc")) else f"{best['test_auc']:.4f}"
            lines.append(f"  test       ROC AUC {auc}  accuracy {best['test_accuracy']:.4f}  "
                         f"(the winner alone, evaluated once)")
    lines.append(f"  results    {outcome.location or outcome.sweep_dir}")
    if outcome.report is not None:
        lines.append(f"  report     {outcome.report}")
    return "\n".join(lines) + "\n"
