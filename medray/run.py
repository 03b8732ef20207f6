"""The main job: data -> train -> evaluate -> explain, everything written to results/<run-id>/."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from medray import console, storage
from medray.calibration import CALIBRATION, with_calibrated_probabilities
from medray.config import RunConfig, to_yaml
from medray.data.manifest import describe_data_report
from medray.data.sources import SPLITS, Source
from medray.evaluate import compute_metrics, predict, predictions_from_maps
from medray.explain.bulk import ExplainOutcome, explain_split
from medray.explain.scorecard import format_scorecard
from medray.errors import MedrayError
from medray.job import prepare_job
from medray.models.classifier import initial_model_bytes
from medray.report import build_report
from medray.report.plots import plot_confusion_matrix
from medray.run_folder import THRESHOLDS, create_run_folder, mark_finished, publish
from medray.task import Head, Task
from medray.tracking import log_run
from medray.train.epoch_lines import epoch_lines
from medray.train.trainer import TrainingOutcome, train_model


@dataclass(frozen=True)
class RunOutcome:
    run_dir: Path  # the driver's copy; the run folder itself when output.dir is local
    location: str  # the run folder: a local path or a URI
    source: Source
    task: Task
    training: TrainingOutcome
    metrics: dict
    explained: ExplainOutcome | None


def run_job(config: RunConfig) -> RunOutcome:
    # Everything that can be checked without Ray is checked first, so mistakes cost seconds.
    job = prepare_job(config)
    task = job.task
    initial_model = pretrained_model(job.backbone, job.image_size, task.head, config.model)
    folder = create_run_folder(config)
    run_dir = folder.local
    # The saved config names its run, so `medray resume <run-dir>` continues this very run.
    config = config.model_copy(update={"output": config.output.model_copy(update={"run_id": run_dir.name})})
    (run_dir / "config.yaml").write_text(to_yaml(config))
    log = console.keep_log_in(run_dir / "logs")
    console.say(f"medray run {run_dir.name}: {config.model.backbone} on {job.source.kind} {job.source.path}, "
                f"{config.scaling.num_workers} Ray Train workers; Ray and TensorFlow log to {log}")
    publish(folder)  # the run folder exists in the bucket from the start, without _SUCCESS

    # The manifest (built once, reused on resume) decides the rows every stage sees.
    job = replace(job, config=config).start(run_dir)
    source, data_report = job.source, job.data_report
    (run_dir / "data.json").write_text(json.dumps(data_report, indent=2))
    console.say(describe_data_report(data_report))
    if data_report["rows_reported"]:
        console.warn(f"{data_report['rows_reported']} rows left out; each is listed in {run_dir / 'data.json'}")
    console.say(f"training for up to {config.train.epochs + config.train.fine_tune.epochs} epochs")
    with epoch_lines(config.train.epochs + config.train.fine_tune.epochs) as show_epochs:
        training = train_model(config, source, job.training_data(), job.image_size, run_dir, initial_model, task,
                               callbacks=[show_epochs], checkpoints=folder.checkpoints)
    pd.DataFrame(training.history).to_csv(run_dir / "history.csv", index=False)

    model_bytes = training.model_path.read_bytes()
    # Decision thresholds (multi-label) and the temperature are chosen on the validation split, never on test.
    validation = predict(job.read_split("val"), model_bytes, job.backbone.name, task,
                         config.explain.batch_size, config.explain.concurrency)
    chosen = task.choose_thresholds(lambda: validation)
    thresholds = None if chosen is None else chosen["thresholds"]
    if chosen is not None:
        (run_dir / THRESHOLDS).write_text(json.dumps(chosen, indent=2))
    calibration = task.fit_temperature(validation)
    if calibration is not None:
        (run_dir / CALIBRATION).write_text(json.dumps(calibration, indent=2))
    test = job.read_split("test", originals=config.explain.enabled and config.explain.overlays)
    explained = None
    if config.explain.enabled:
        # The explain job computes every test image's probabilities as well: one pass over the test split.
        explained = explain_split(test, model_bytes, job.backbone.name, task, config.explain,
                                  run_dir / "explain", rows=source.num_rows("test"),
                                  read_rows=lambda row_ids: job.read_split("test", row_ids), thresholds=thresholds)
        predictions = predictions_from_maps(explained.maps_dir, task, thresholds)
        for method, score in explained.scores.items():
            if (score.get("randomisation_verdict") or "").startswith("FAILED"):
                console.warn(f"{method}: sanity checks {score['randomisation_verdict']}: its maps barely change when the model "
                             f"is randomised, so they may not show what the model learned; see "
                             f"{run_dir / 'explain' / 'checks.png'}")
    else:
        predictions = predict(test, model_bytes, job.backbone.name, task, config.explain.batch_size,
                              config.explain.concurrency, thresholds)
    # The raw probabilities stay; the calibrated ones are a column beside them (medray.calibration).
    predictions = with_calibrated_probabilities(predictions, task, calibration)
    predictions.to_parquet(run_dir / "predictions.parquet", index=False)
    metrics = compute_metrics(predictions, task, thresholds)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if "confusion_matrix" in metrics:  # one class per image
        plot_confusion_matrix(metrics["confusion_matrix"], source.class_names, run_dir / "confusion_matrix.png")
    outcome = RunOutcome(run_dir, folder.location, source, task, training, metrics, explained)
    (run_dir / "summary.txt").write_text(summarise(outcome))
    if config.report.enabled:
        report = build_report(run_dir, config.report.examples_per_class)
        with (run_dir / "summary.txt").open("a") as summary:
            report_location = storage.join(folder.location, Path(report).relative_to(run_dir).as_posix())
            summary.write(f"  report     {report_location}\n")
    if config.tracking.enabled:  # last, so that the report and plots are logged with the run
        log_run(run_dir, config.tracking, config.output.dir)
    mark_finished(folder)
    return outcome


def pretrained_model(backbone, image_size: int, head: Head, model_config) -> bytes | None:
    try:
        return initial_model_bytes(backbone, image_size, head, model_config)
    except (OSError, ValueError) as error:  # a failed download, or weights of the wrong shape
        raise MedrayError(
            f"model.weights={model_config.weights!r} for {backbone.name}: {error}; on machines without "
            "internet, pre-fetch ImageNet weights into ~/.keras/models (see README) or pass a weights file"
        ) from None


def undefined_by_reason(metrics: dict) -> dict[str, list[str]]:
    """The metrics that could not be computed, one entry per reason ("no test image was predicted
    as this class": ["a precision", "b precision"])."""
    grouped: dict[str, list[str]] = {}
    for what, why in metrics.get("undefined", {}).items():
        grouped.setdefault(why, []).append(what)
    return grouped


def describe_calibration(run_dir: Path, metrics: dict) -> str:
    """The summary's calibration line: the temperature(s) fitted on val, and the test ECE before and after."""
    record = json.loads((run_dir / CALIBRATION).read_text())
    temperatures = ", ".join(f"{t:.2f}" for t in record["temperatures"])
    line = (f"  calibrated temperature scaling fitted on val (n={record['images']}): "
            f"T {temperatures} ({'one per label' if record['shared_by'] == 'label' else 'shared by the classes'})")
    if "expected_calibration_error_calibrated" in metrics:
        line += (f"; test ECE {metrics['expected_calibration_error']:.4f} -> "
                 f"{metrics['expected_calibration_error_calibrated']:.4f}")
    return line


def summarise(outcome: RunOutcome) -> str:
    metrics, training, source = outcome.metrics, outcome.training, outcome.source
    lines = [
        f"medray run {outcome.run_dir.name}",
        *(f"  WARNING    {warning}" for warning in metrics.get("warnings", [])),
        f"  data       {source.kind} {source.path} ({source.color})",
        *(f"  {split:<10} {source.num_rows(split)} images  "
          + ", ".join(f"{name} {count}" for name, count in zip(source.class_names, source.class_counts[split]))
          for split in SPLITS),
        f"  training   {len(training.history)} epochs, model from epoch {training.exported_epoch} "
        f"(val_loss {training.exported_metrics['val_loss']:.4f}, val_auc {training.exported_metrics['val_auc']:.4f})",
        *([f"  left out   {len(source.rejected)} rows (see data.json)"] if source.rejected else []),
        *(f"  stopped    {reason}" for reason in training.stop_reasons),
        f"  test       {outcome.task.describe_metrics(metrics, source.class_counts['test'])}",
        *(f"  n/a        {', '.join(whats)}: {why}" for why, whats in undefined_by_reason(metrics).items()),
        *([describe_calibration(outcome.run_dir, metrics)] if (outcome.run_dir / CALIBRATION).is_file() else []),
    ]
    if outcome.explained is not None:  # the scorecard's first line per method counts the maps
        lines += ["  " + line for line in format_scorecard(outcome.explained.scores).splitlines()]
    lines.append(f"  results    {outcome.location}")
    return "\n".join(lines) + "\n"
