"""Metrics of a known confusion: scikit-learn's numbers, per class and averaged, binary and multi-class."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

from medray.task import SingleLabelTask
from medray.evaluate import compute_metrics
from medray.report.metrics import (
    calibration_bins,
    classification_metrics,
    expected_calibration_error,
    model_warnings,
)

# A known confusion of three classes (rows true, columns predicted): 18 images.
CONFUSION = np.array([[5, 1, 0],
                      [2, 4, 2],
                      [0, 1, 3]])
NAMES = ["normal", "benign", "malignant"]


def rows_of(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels, predicted = [], []
    for true in range(len(confusion)):
        for guess in range(len(confusion)):
            labels += [true] * confusion[true, guess]
            predicted += [guess] * confusion[true, guess]
    return np.array(labels), np.array(predicted)


def probabilities_for(predicted: np.ndarray, classes: int, seed: int = 0) -> np.ndarray:
    """Probabilities whose argmax is the prediction, with varied confidence."""
    rng = np.random.default_rng(seed)
    scores = rng.uniform(0, 1, (len(predicted), classes))
    scores[np.arange(len(predicted)), predicted] += 1.0
    return scores / scores.sum(axis=1, keepdims=True)


def test_known_confusion_gives_the_hand_computed_numbers():
    labels, predicted = rows_of(CONFUSION)
    metrics = classification_metrics(labels, predicted, probabilities_for(predicted, 3), NAMES)
    assert metrics["confusion_matrix"] == CONFUSION.tolist()
    assert metrics["accuracy"] == pytest.approx(12 / 18)
    # recalls 5/6, 4/8, 3/4; precisions 5/7, 4/6, 3/5
    assert metrics["balanced_accuracy"] == pytest.approx((5 / 6 + 4 / 8 + 3 / 4) / 3)
    per_class = {row["class"]: row for row in metrics["per_class"]}
    assert per_class["benign"]["precision"] == pytest.approx(4 / 6)
    assert per_class["benign"]["recall"] == pytest.approx(4 / 8)
    assert per_class["malignant"]["f1"] == pytest.approx(2 * (3 / 5) * (3 / 4) / (3 / 5 + 3 / 4))
    assert [row["support"] for row in metrics["per_class"]] == [6, 8, 4]
    assert metrics["confusion_matrix_normalised"][1] == pytest.approx([2 / 8, 4 / 8, 2 / 8])
    assert metrics["most_confused"][0] == {"true": "benign", "predicted": "normal", "count": 2,
                                           "share_of_true_class": pytest.approx(0.25)}


def test_averages_and_auc_match_scikit_learn():
    labels, predicted = rows_of(CONFUSION)
    probabilities = probabilities_for(predicted, 3, seed=5)
    metrics = classification_metrics(labels, predicted, probabilities, NAMES)
    assert metrics["macro_f1"] == pytest.approx(f1_score(labels, predicted, average="macro"))
    assert metrics["weighted_f1"] == pytest.approx(f1_score(labels, predicted, average="weighted"))
    assert metrics["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, predicted))
    assert metrics["roc_auc_ovr"] == pytest.approx(
        roc_auc_score(labels, probabilities, multi_class="ovr", average="macro"))
    for index, name in enumerate(NAMES):
        assert metrics["roc_auc_per_class"][name] == pytest.approx(
            roc_auc_score(labels == index, probabilities[:, index]))


def test_binary_auc_is_the_positive_class_score():
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    positive = np.array([0.1, 0.4, 0.35, 0.8, 0.7, 0.3, 0.9, 0.6])
    probabilities = np.stack([1 - positive, positive], axis=1)
    metrics = classification_metrics(labels, probabilities.argmax(axis=1), probabilities, ["normal", "pneumonia"])
    assert metrics["roc_auc_ovr"] == pytest.approx(roc_auc_score(labels, positive))
    assert metrics["roc_auc_per_class"]["normal"] == pytest.approx(metrics["roc_auc_per_class"]["pneumonia"])


def test_binary_auc_reads_one_column_when_float32_rounding_ties_the_other():
    # Saturated softmax outputs: two rows round to exactly 1.0 in the second column while their
    # first column (1e-9, 2e-9) still tells them apart; averaging both columns' AUCs gave 0.6875.
    labels = np.array([1, 0, 1, 0])
    probabilities = np.array([[1e-9, 1.0], [2e-9, 1.0], [0.8, 0.2], [0.9, 0.1]], dtype=np.float32)
    metrics = classification_metrics(labels, probabilities.argmax(axis=1), probabilities, ["normal", "pneumonia"])
    assert metrics["roc_auc_ovr"] == pytest.approx(roc_auc_score(labels, probabilities[:, 1])) == 0.625
    assert metrics["roc_auc_per_class"] == {"normal": 0.625, "pneumonia": 0.625}


def test_a_class_missing_from_the_test_split_has_no_auc_and_no_recall_credit():
    labels = np.array([0, 0, 1, 1])
    predicted = np.array([0, 2, 1, 1])
    probabilities = probabilities_for(predicted, 3)
    metrics = classification_metrics(labels, predicted, probabilities, ["a", "b", "c"])
    assert metrics["roc_auc_per_class"]["c"] is None
    assert metrics["roc_auc_ovr"] == pytest.approx(np.mean([roc_auc_score(labels == c, probabilities[:, c]) for c in (0, 1)]))
    assert metrics["balanced_accuracy"] == pytest.approx((0.5 + 1.0) / 2)
    # predicted but absent: its predictions were all wrong (precision 0), its recall is undefined
    assert metrics["per_class"][2] == {"class": "c", "precision": 0.0, "recall": None, "f1": 0.0, "support": 0}
    assert metrics["undefined"] == {"c recall": "no test image of this class"}


def test_a_class_absent_from_the_test_split_and_never_predicted_is_undefined_not_zero():
    labels = np.array([0, 0, 1, 1, 1])
    predicted = np.array([0, 1, 1, 1, 0])
    metrics = classification_metrics(labels, predicted, probabilities_for(predicted, 3), ["a", "b", "c"])
    assert metrics["per_class"][2] == {"class": "c", "precision": None, "recall": None, "f1": None, "support": 0}
    assert metrics["undefined"]["c precision, recall, F1"] == "no test image of this class and none predicted as it"
    assert metrics["macro_f1"] == pytest.approx(f1_score(labels, predicted, labels=[0, 1], average="macro"))
    assert metrics["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert metrics["macro_classes"] == {"macro_f1": ["a", "b"], "balanced_accuracy": ["a", "b"],
                                        "roc_auc_ovr": ["a", "b"]}


def test_a_one_class_test_split_reports_what_it_can_and_why_not_the_rest():
    labels = np.array([1, 1, 1, 1])
    predicted = np.array([1, 1, 0, 1])
    metrics = classification_metrics(labels, predicted, probabilities_for(predicted, 2), ["normal", "pneumonia"])
    assert metrics["accuracy"] == 0.75 and metrics["balanced_accuracy"] == 0.75
    pneumonia = metrics["per_class"][1]
    assert pneumonia["precision"] == 1.0 and pneumonia["recall"] == 0.75
    assert metrics["roc_auc_ovr"] is None and metrics["macro_classes"]["roc_auc_ovr"] == []
    assert metrics["undefined"]["roc_auc_ovr"].startswith("the test split holds only pneumonia")
    assert metrics["undefined"]["normal recall"] == "no test image of this class"


def test_expected_calibration_error_is_the_weighted_gap_between_confidence_and_accuracy():
    # Bin (0.5, 0.6]: 4 rows at 0.55, 2 right -> gap 0.05; bin (0.9, 1.0]: 6 rows at 0.95, all right -> 0.05.
    confidence = np.array([0.55] * 4 + [0.95] * 6)
    correct = np.array([1, 1, 0, 0] + [1] * 6, dtype=bool)
    assert expected_calibration_error(confidence, correct) == pytest.approx((4 * 0.05 + 6 * 0.05) / 10)
    bins = calibration_bins(confidence, correct)
    assert list(bins["rows"]) == [0, 0, 0, 0, 0, 4, 0, 0, 0, 6]
    perfect = np.array([0.8] * 5), np.array([1, 1, 1, 1, 0], dtype=bool)
    assert expected_calibration_error(*perfect) == pytest.approx(0)


def test_compute_metrics_reads_the_predictions_table():
    labels, predicted = rows_of(CONFUSION)
    probabilities = probabilities_for(predicted, 3)
    table = pd.DataFrame({"row_id": [str(i) for i in range(len(labels))], "label": labels,
                          "prediction": predicted, "confidence": probabilities.max(axis=1),
                          "probabilities": list(probabilities)})
    metrics = compute_metrics(table, SingleLabelTask(tuple(NAMES)))
    assert metrics["rows"] == 18 and metrics["class_names"] == NAMES
    assert metrics["accuracy"] == pytest.approx(12 / 18)


def test_a_model_that_answers_one_class_for_every_image_is_called_out():
    """The issue's run: 360 phantoms, 216 of the largest class, every image predicted as it."""
    labels = np.repeat([0, 1, 2], [216, 90, 54])
    warnings = model_warnings(labels, np.zeros_like(labels), NAMES)
    assert "the model predicts normal for 360 of 360 test images" in warnings[0]
    assert "test accuracy 0.6000 does not beat always answering the largest class normal (0.6000)" in warnings[1]
    assert warnings[2].startswith("what to do:")


def test_a_model_below_the_majority_share_is_called_out_though_it_predicts_every_class():
    labels, predicted = rows_of(np.array([[4, 3, 3], [1, 1, 1], [1, 1, 0]]))  # accuracy 5/15 < 10/15
    warnings = model_warnings(labels, predicted, NAMES)
    assert len(warnings) == 2 and "does not beat always answering the largest class normal (0.6667)" in warnings[0]


def test_a_model_that_beats_the_majority_class_gets_no_warning():
    labels, predicted = rows_of(CONFUSION)  # accuracy 12/18 against a largest class of 8/18
    assert model_warnings(labels, predicted, NAMES) == []
    assert classification_metrics(labels, predicted, probabilities_for(predicted, 3), NAMES)["warnings"] == []


def test_a_one_class_test_split_is_not_called_degenerate():
    labels = np.zeros(20, dtype=int)
    assert model_warnings(labels, labels, NAMES) == []
