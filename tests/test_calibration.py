"""Temperature scaling (Guo et al. 2017) through the task object: an over-confident model gets
T > 1 on the validation split and a lower calibration error on a test split it never saw."""

import numpy as np
import pandas as pd
import pytest
from scipy import special

from medray.calibration import scale_sigmoid, scale_softmax, with_calibrated_probabilities
from medray.report.metrics import class_metrics, class_prediction_table, expected_calibration_error
from medray.report.multilabel_metrics import multilabel_prediction_table
from medray.task import BinaryTask, MultiLabelTask, SingleLabelTask

CLASSES = ("no_lesion", "bright", "dark")
OVER_CONFIDENCE = 3.0  # the model's logits are the true ones times this


def split(rng, rows: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z) and the over-confident model's softmax(3 z)."""
    logits = rng.normal(0, 1.2, (rows, classes))
    labels = np.array([rng.choice(classes, p=p) for p in special.softmax(logits, axis=1)])
    return labels, special.softmax(OVER_CONFIDENCE * logits, axis=1)


def table(task, labels, probabilities) -> pd.DataFrame:
    return task.prediction_table(np.array([f"r{i:04d}" for i in range(len(labels))]), labels, probabilities)


def ece(labels, probabilities) -> float:
    return expected_calibration_error(probabilities.max(axis=1), labels == probabilities.argmax(axis=1))


def test_an_over_confident_softmax_model_gets_t_above_one_and_a_lower_test_ece():
    task = SingleLabelTask(CLASSES)
    rng = np.random.default_rng(0)
    validation, test = table(task, *split(rng, 2000, 3)), table(task, *split(rng, 2000, 3))

    record = task.fit_temperature(validation)
    calibrated = with_calibrated_probabilities(test, task, record)
    metrics = class_metrics(calibrated, list(CLASSES))

    assert record["fitted_on"] == "val" and record["images"] == 2000 and record["shared_by"] == "classes"
    (temperature,) = record["temperatures"]
    assert temperature == pytest.approx(OVER_CONFIDENCE, rel=0.15)
    assert metrics["expected_calibration_error"] > 0.1
    assert metrics["expected_calibration_error_calibrated"] < metrics["expected_calibration_error"] / 3
    # The predictions are the model's: temperature scaling keeps the order of the classes.
    after = np.stack(calibrated["calibrated_probabilities"].to_numpy())
    assert (after.argmax(axis=1) == calibrated["prediction"]).all()
    assert np.array_equal(np.stack(calibrated["probabilities"].to_numpy()), np.stack(test["probabilities"].to_numpy()))


def test_an_under_confident_model_gets_t_below_one():
    task = SingleLabelTask(CLASSES)
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 2.0, (2000, 3))
    labels = np.array([rng.choice(3, p=p) for p in special.softmax(logits, axis=1)])
    record = task.fit_temperature(table(task, labels, special.softmax(logits / 2, axis=1)))
    assert record["temperatures"][0] == pytest.approx(0.5, rel=0.15)


def test_binary_sigmoid_head_scales_its_logit_with_one_temperature():
    task = BinaryTask(("normal", "pneumonia"))
    rng = np.random.default_rng(3)

    def binary_split(rows):
        logit = rng.normal(0, 1.5, rows)
        labels = (rng.random(rows) < special.expit(logit)).astype(int)
        return labels, task.class_probabilities(special.expit(OVER_CONFIDENCE * logit)[:, np.newaxis])

    validation, (labels, probabilities) = table(task, *binary_split(2000)), binary_split(2000)
    record = task.fit_temperature(validation)
    (temperature,) = record["temperatures"]
    calibrated = task.apply_temperature(probabilities, np.array([temperature]))
    assert temperature > 2
    # softmax of log[1 - p, p] over T is the sigmoid of logit(p) / T
    assert calibrated[:, 1] == pytest.approx(scale_sigmoid(probabilities[:, 1:], [temperature])[:, 0], abs=1e-9)
    assert ece(labels, calibrated) < ece(labels, probabilities) / 2


def test_multi_label_fits_one_temperature_per_label_on_its_known_entries():
    task = MultiLabelTask(("bright", "dark"))
    rng = np.random.default_rng(4)
    rows = 3000
    logits = rng.normal(0, 1.5, (rows, 2))
    labels = (rng.random((rows, 2)) < special.expit(logits)).astype(np.int8)
    labels[rng.random(rows) < 0.2, 1] = -1  # unknown entries are left out of label 1's fit
    # label 0 over-confident (x3), label 1 under-confident (x0.5)
    probabilities = special.expit(logits * np.array([OVER_CONFIDENCE, 0.5]))
    validation = multilabel_prediction_table(np.array([f"r{i}" for i in range(rows)]), labels, probabilities,
                                             np.full(2, 0.5), list(task.class_names))
    record = task.fit_temperature(validation)
    assert record["shared_by"] == "label" and record["names"] == ["bright", "dark"]
    assert record["temperatures"][0] == pytest.approx(OVER_CONFIDENCE, rel=0.15)
    assert record["temperatures"][1] == pytest.approx(0.5, rel=0.15)


def test_a_validation_split_without_labels_fits_nothing():
    task = SingleLabelTask(CLASSES)
    probabilities = special.softmax(np.random.default_rng(5).normal(size=(10, 3)), axis=1)
    unlabelled = class_prediction_table(np.arange(10).astype(str), np.full(10, -1), probabilities, list(CLASSES))
    assert task.fit_temperature(unlabelled) is None
    assert "calibrated_probabilities" not in with_calibrated_probabilities(unlabelled, task, None)
