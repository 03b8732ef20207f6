"""Everything the report shows about a multi-label run, read from the files the run wrote.

A run is multi-label when the `label` column of its predictions.parquet holds one list of K labels
per image (the layout multi-label runs write, next to "task": "multi_label" in metrics.json).
As for single-label runs, the metrics are recomputed from predictions.parquet with the function
that wrote metrics.json, at the thresholds stored in thresholds.json, so the two never disagree.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from medray.errors import MedrayError
from medray.report import plots
from medray.report.analysis import DEFAULT_EXAMPLES_PER_CLASS, picture_galleries
from medray.report.multilabel_analysis import errors_by_label, has_pictures
from medray.report.explanations import explanation_verdicts, uncertainty_by_correctness
from medray.report.multilabel_metrics import (
    DEFAULT_THRESHOLD,
    MULTI_LABEL,
    UNKNOWN,
    multilabel_metrics,
    multilabel_prediction_arrays,
)
from medray.report.run_section import (
    PREDICTIONS,
    read_class_names,
    read_optional_json,
    read_prediction_file,
    read_run_files,
    shared_figures,
)
from medray.run_folder import THRESHOLDS

MULTILABEL_COLUMNS = {"row_id", "label", "probabilities"}


def is_multilabel_run(run_dir: Path) -> bool:
    """Whether predictions.parquet holds a list of labels per image. An unreadable file counts as
    single-label: reading it there names the problem."""
    try:
        field = pq.read_schema(run_dir / PREDICTIONS).field("label")
    except (OSError, KeyError, pa.ArrowInvalid):
        return False
    return pa.types.is_list(field.type) or pa.types.is_large_list(field.type) or pa.types.is_fixed_size_list(field.type)


def read_multilabel_predictions(run_dir: Path, label_names: list[str]) -> pd.DataFrame:
    predictions = read_prediction_file(run_dir, MULTILABEL_COLUMNS)
    path = run_dir / PREDICTIONS
    widths = {len(value) for column in ("label", "probabilities") for value in predictions[column]}
    if widths != {len(label_names)}:
        raise MedrayError(f"{path} does not match the {len(label_names)} labels in data.json "
                          f"({', '.join(label_names)}); were the files of two runs mixed?")
    values = set(np.unique(np.concatenate(predictions["label"].to_numpy())).tolist())
    if not values <= {1, 0, UNKNOWN}:
        raise MedrayError(f"{path} has label values {sorted(values - {1, 0, UNKNOWN})}; a multi-label run writes "
                          "1 (present), 0 (absent) and -1 (unknown) only; rerun `medray run`")
    return predictions


def read_thresholds(run_dir: Path, label_names: list[str]) -> tuple[np.ndarray, str, dict[str, str]]:
    """(thresholds (K,), a sentence on where they come from, {label: why it kept the default})."""
    path = run_dir / THRESHOLDS
    if not path.is_file():
        return (np.full(len(label_names), DEFAULT_THRESHOLD),
                f"This run folder has no {THRESHOLDS}: every label is cut at {DEFAULT_THRESHOLD}.", {})
    record = read_optional_json(path)
    if record.get("labels") != label_names or len(record.get("thresholds") or []) != len(label_names):
        raise MedrayError(f"{path} does not list one threshold for each of the labels in data.json "
                          f"({', '.join(label_names)}); were the files of two runs mixed? Rerun `medray run`")
    try:
        thresholds = np.asarray(record["thresholds"], dtype=np.float64)
    except (TypeError, ValueError):
        raise MedrayError(f"{path}: thresholds must be numbers between 0 and 1; rerun `medray run`") from None
    chosen_on = record.get("chosen_on", "an unrecorded")
    return (thresholds, f"Thresholds from {THRESHOLDS}, chosen on the {chosen_on} split to maximise each label's F1.",
            {str(name): str(why) for name, why in (record.get("reasons") or {}).items()})


def describe_multilabel_run(run_dir: Path, examples_per_class: int = DEFAULT_EXAMPLES_PER_CLASS) -> dict:
    label_names = read_class_names(run_dir)
    predictions = read_multilabel_predictions(run_dir, label_names)
    labels, probabilities = multilabel_prediction_arrays(predictions)
    thresholds, thresholds_note, threshold_reasons = read_thresholds(run_dir, label_names)
    metrics = multilabel_metrics(labels, probabilities, thresholds, label_names)
    data, config_text, config, history, plot_dir = read_run_files(run_dir)
    figures = {"roc": plots.plot_label_roc_curves(labels, probabilities, label_names, plot_dir / "roc_curves.png"),
               **shared_figures(plot_dir, data, history)}
    label_errors = errors_by_label(labels, probabilities, thresholds, predictions["row_id"].astype(str).tolist(),
                                   label_names, run_dir, examples_per_class, config)
    return {
        "task": MULTI_LABEL,
        "run_id": run_dir.name,
        "class_names": label_names,
        "metrics": metrics,
        # images with no label present: ChestX-ray14's "No Finding"
        "no_finding": int((~(labels == 1).any(axis=1)).sum()),
        "thresholds_note": thresholds_note,
        "threshold_reasons": threshold_reasons,
        "model": config.get("model", {}),
        "epochs_run": None if history is None else len(history),
        "config_text": config_text,
        "data": data,
        "figures": {key: path.relative_to(run_dir).as_posix() for key, path in figures.items()},
        "label_errors": label_errors,
        "label_pictures": has_pictures(label_errors),
        "galleries": picture_galleries(run_dir),
        "explanations": explanation_verdicts(run_dir),
        "uncertainty": uncertainty_by_correctness(run_dir, plot_dir),
        # a multi-label image has several classes; the per-class comparison of methods is single-label's
        "methods_by_class": None,
    }
