"""Everything the report shows about one run, read from the files the run wrote.

Metrics are recomputed from `predictions.parquet` with the same function the run used for
`metrics.json`, so a rebuilt report never disagrees with it; plots go to `<run>/plots/`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from medray.errors import MedrayError
from medray.report import plots
from medray.report.explanations import explanation_verdicts
from medray.report.analysis import DEFAULT_EXAMPLES_PER_CLASS, misclassified_by_class, picture_galleries
from medray.calibration import CALIBRATION
from medray.report.explanations import methods_by_class, uncertainty_by_correctness
from medray.report.metrics import calibrated_arrays, calibration_bins, class_metrics, prediction_arrays

PREDICTIONS = "predictions.parquet"
PREDICTION_COLUMNS = {"row_id", "label", "prediction", "confidence", "probabilities"}
# One class per image: softmax runs and binary-sigmoid runs (whose predictions have the same layout).
SINGLE_LABEL = "single_label"


def read_prediction_file(run_dir: Path, columns: set[str]) -> pd.DataFrame:
    """predictions.parquet of a run, checked to be readable, to hold `columns` and at least one row."""
    path = run_dir / PREDICTIONS
    try:
        predictions = pd.read_parquet(path)
    except Exception as error:  # noqa: BLE001  (pyarrow raises several types for a damaged file)
        raise MedrayError(f"{path} cannot be read ({error}); rerun `medray run` to write it again") from None
    missing = columns - set(predictions.columns)
    if missing:
        raise MedrayError(f"{path} lacks the columns {', '.join(sorted(missing))}; it was not written by "
                          "`medray run` (rerun it to get a predictions table)")
    if predictions.empty:
        raise MedrayError(f"{path} has no rows; the test split was empty, so there is nothing to report")
    return predictions


def read_predictions(run_dir: Path, class_names: list[str]) -> pd.DataFrame:
    path = run_dir / PREDICTIONS
    predictions = read_prediction_file(run_dir, PREDICTION_COLUMNS)
    widths = {len(p) for p in predictions["probabilities"]}
    labels = pd.concat([predictions["label"], predictions["prediction"]])
    if widths != {len(class_names)} or labels.min() < 0 or labels.max() >= len(class_names):
        raise MedrayError(f"{path} does not match the {len(class_names)} classes in data.json "
                          f"({', '.join(class_names)}); were the files of two runs mixed?")
    return predictions


def read_class_names(run_dir: Path) -> list[str]:
    for name in ("data.json", "metrics.json"):
        path = run_dir / name
        if path.is_file():
            try:
                names = json.loads(path.read_text()).get("class_names")
            except json.JSONDecodeError as error:
                raise MedrayError(f"{path} is not valid JSON ({error}); rerun `medray run`") from None
            if names:
                return [str(n) for n in names]
    raise MedrayError(f"{run_dir} has neither data.json nor metrics.json with class_names; "
                      "pass the folder of a run written by `medray run`")


def read_optional_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise MedrayError(f"{path} is not valid JSON ({error}); rerun `medray run` or delete it") from None


def read_config_text(run_dir: Path) -> tuple[str, dict]:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return "", {}
    text = path.read_text()
    try:
        return text, yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise MedrayError(f"{path} is not valid YAML ({error}); rerun `medray run`") from None


def read_run_files(run_dir: Path) -> tuple[dict | None, str | None, dict | None, pd.DataFrame | None, Path]:
    """What every run report reads besides its predictions: data.json, config.yaml (text and
    mapping), history.csv (None where absent), and the plots folder, created."""
    data = read_optional_json(run_dir / "data.json")
    config_text, config = read_config_text(run_dir)
    history_path = run_dir / "history.csv"
    history = pd.read_csv(history_path) if history_path.is_file() else None
    plot_dir = run_dir / "plots"
    plot_dir.mkdir(exist_ok=True)
    return data, config_text, config, history, plot_dir


def describe_run(run_dir: Path, examples_per_class: int = DEFAULT_EXAMPLES_PER_CLASS) -> dict:
    class_names = read_class_names(run_dir)
    predictions = read_predictions(run_dir, class_names)
    labels, predicted, probabilities = prediction_arrays(predictions)
    metrics = class_metrics(predictions, class_names)
    data, config_text, config, history, plot_dir = read_run_files(run_dir)
    figures = draw_run_plots(plot_dir, metrics, labels, predicted, probabilities, class_names, data, history)
    calibrated = calibrated_arrays(predictions)
    if calibrated is not None:  # the same diagram after temperature scaling (medray.calibration)
        figures["reliability_calibrated"] = plots.plot_reliability_diagram(
            calibration_bins(calibrated.max(axis=1), labels == predicted),
            metrics["expected_calibration_error_calibrated"], plot_dir / "reliability_diagram_calibrated.png",
            title="after temperature scaling")
    support = np.bincount(labels, minlength=len(class_names))
    return {
        "task": SINGLE_LABEL,
        "run_id": run_dir.name,
        "class_names": class_names,
        "metrics": metrics,
        "majority_share": float(support.max() / support.sum()),
        "model": config.get("model", {}),
        "epochs_run": None if history is None else len(history),
        "config_text": config_text,
        "data": data,
        "split_totals": {split: sum(counts.values()) for split, counts in data.get("class_counts", {}).items()},
        "figures": {key: path.relative_to(run_dir).as_posix() for key, path in figures.items()},
        "misclassified": misclassified_by_class(predictions, class_names, run_dir, examples_per_class, config),
        "galleries": picture_galleries(run_dir),
        "explanations": explanation_verdicts(run_dir),
        "calibration": read_optional_json(run_dir / CALIBRATION) or None,
        "uncertainty": uncertainty_by_correctness(run_dir, plot_dir),
        "methods_by_class": methods_by_class(run_dir, class_names),
    }


def draw_run_plots(plot_dir: Path, metrics: dict, labels, predicted, probabilities, class_names: list[str],
                   data: dict, history: pd.DataFrame | None) -> dict[str, Path]:
    confidence = probabilities.max(axis=1)
    correct = labels == predicted
    figures = {
        "confusion_counts": plots.plot_confusion_matrix(
            metrics["confusion_matrix"], class_names, plot_dir / "confusion_matrix_counts.png"),
        "confusion_normalised": plots.plot_confusion_matrix(
            metrics["confusion_matrix_normalised"], class_names, plot_dir / "confusion_matrix_normalised.png",
            normalised=True),
        "roc": plots.plot_roc_curves(labels, probabilities, class_names, plot_dir / "roc_curves.png"),
        "reliability": plots.plot_reliability_diagram(
            calibration_bins(confidence, correct), metrics["expected_calibration_error"],
            plot_dir / "reliability_diagram.png"),
        "confidence": plots.plot_confidence_histogram(confidence, correct, plot_dir / "confidence_histogram.png"),
    }
    recall = [np.nan if row["recall"] is None else row["recall"] for row in metrics["per_class"]]  # None: no test image
    train_counts = data.get("class_counts", {}).get("train")
    if train_counts:  # the frequency the model learned from; the test support is the fallback
        counts, share_label = [train_counts.get(name, 0) for name in class_names], "Share of training images"
    else:
        counts, share_label = [row["support"] for row in metrics["per_class"]], "Share of test images"
    share = list(np.asarray(counts, dtype=float) / max(sum(counts), 1))
    figures["recall_frequency"] = plots.plot_recall_against_frequency(
        class_names, recall, share, share_label, plot_dir / "recall_vs_frequency.png")
    figures.update(shared_figures(plot_dir, data, history))
    return figures


def shared_figures(plot_dir: Path, data: dict, history: pd.DataFrame | None) -> dict[str, Path]:
    """The figures every task's report draws: images per class (or label) and split, training curves."""
    figures = {}
    if data.get("class_counts"):
        figures["class_distribution"] = plots.plot_class_distribution(
            data["class_counts"], plot_dir / "class_distribution.png")
    if history is not None and not history.empty:
        figures["training_curves"] = plots.plot_training_curves(history, plot_dir / "training_curves.png")
    return figures
