"""Test-split metrics from the predictions table, all computed by scikit-learn.

Binary and multi-class runs share one code path: every per-class number is one-vs-rest, and the
macro ROC AUC is the mean over the classes present in the test split (a class with no test image
has no ROC curve, so it gets None instead of a made-up number). With two classes that mean is the
ROC AUC of the second class's probability, the number MedMNIST's evaluator and its baselines report.

Degenerate test splits are reported, not papered over: a ratio with nothing to divide (the recall
of a class without test images, the precision of a class never predicted) is None with a reason in
`undefined`, never 0, and each macro average names the classes it is the mean over.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

# A model that gives this share of the test images one class has learnt nothing the test split can
# show; below 1, so that a few stray predictions of such a model do not hide it.
ONE_CLASS_SHARE = 0.95
# Equal-width confidence bins of the reliability diagram and of the expected calibration error.
CALIBRATION_BINS = 10
MOST_CONFUSED_PAIRS = 5


def prediction_arrays(predictions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """labels, predicted classes and the (rows, classes) probability matrix of a predictions table."""
    labels = predictions["label"].to_numpy().astype(int)
    predicted = predictions["prediction"].to_numpy().astype(int)
    probabilities = np.stack(predictions["probabilities"].to_numpy()).astype(np.float64)
    return labels, predicted, probabilities


def classification_metrics(labels: np.ndarray, predicted: np.ndarray, probabilities: np.ndarray,
                           class_names: list[str]) -> dict:
    """Test-split metrics. A number that cannot be computed is None, with its reason in `undefined`
    (a class absent from the test split and never predicted has no precision, recall or F1, not 0),
    and every macro average lists the classes it covers in `macro_classes`."""
    indices = list(range(len(class_names)))
    # zero_division=nan: an undefined ratio stays undefined instead of counting as 0.
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=indices, zero_division=np.nan)
    per_class_auc = roc_auc_per_class(labels, probabilities)
    matrix = confusion_matrix(labels, predicted, labels=indices)
    confidence = probabilities.max(axis=1)
    undefined = undefined_reasons(matrix, class_names)
    with_f1 = [index for index in indices if not np.isnan(f1[index])]
    present = [index for index in indices if support[index] > 0]
    with_auc = [index for index in indices if per_class_auc[index] is not None]
    if len(with_auc) < 2:
        undefined["roc_auc_ovr"] = (f"the test split holds only {', '.join(class_names[i] for i in present)}; "
                                    "a ROC curve needs images of a class and of the rest")
    return {
        "rows": int(len(labels)),
        "accuracy": float(accuracy_score(labels, predicted)),
        "balanced_accuracy": balanced_accuracy(labels, predicted),
        "macro_f1": float(f1[with_f1].mean()) if with_f1 else None,
        "weighted_f1": float(f1_score(labels, predicted, average="weighted", labels=indices, zero_division=0)),
        "roc_auc_ovr": roc_auc(labels, probabilities),
        "roc_auc_per_class": {name: per_class_auc[index] for index, name in enumerate(class_names)},
        # which classes each macro average is the mean over
        "macro_classes": {"macro_f1": [class_names[i] for i in with_f1],
                          "balanced_accuracy": [class_names[i] for i in present],
                          "roc_auc_ovr": [class_names[i] for i in with_auc] if len(with_auc) >= 2 else []},
        "undefined": undefined,
        "expected_calibration_error": expected_calibration_error(confidence, labels == predicted),
        "per_class": [
            {"class": name, "precision": _defined(precision[index]), "recall": _defined(recall[index]),
             "f1": _defined(f1[index]), "support": int(support[index])}
            for index, name in enumerate(class_names)
        ],
        "confusion_matrix": matrix.tolist(),
        "confusion_matrix_normalised": row_normalise(matrix).tolist(),
        "most_confused": most_confused_pairs(matrix, class_names),
        "class_names": list(class_names),
        "warnings": model_warnings(labels, predicted, class_names),
    }


def model_warnings(labels: np.ndarray, predicted: np.ndarray, class_names: list[str]) -> list[str]:
    """Plain-language warnings about a model that learnt nothing useful, for the console and report.

    Two signs, each checked only when the test split holds at least two classes: one class
    predicted for ONE_CLASS_SHARE or more of the test images, and test accuracy at or below the
    share of the largest test class (what always answering that class scores)."""
    rows = len(labels)
    true_counts = np.bincount(labels, minlength=len(class_names))
    if rows == 0 or np.count_nonzero(true_counts) < 2:
        return []
    found = []
    predicted_counts = np.bincount(predicted, minlength=len(class_names))
    top = int(predicted_counts.argmax())
    if predicted_counts[top] >= ONE_CLASS_SHARE * rows:
        found.append(f"the model predicts {class_names[top]} for {predicted_counts[top]} of {rows} test images: "
                     "it does not tell the classes apart")
    accuracy, majority = float(np.mean(labels == predicted)), true_counts.max() / rows
    if accuracy <= majority:
        found.append(f"test accuracy {accuracy:.4f} does not beat always answering the largest class "
                     f"{class_names[int(true_counts.argmax())]} ({majority:.4f})")
    if found:
        found.append("what to do: check the epoch lines (training accuracy that stays near the largest class's share "
                     "points at the learning rate or at labels that do not match the images)")
    return found


def undefined_reasons(matrix: np.ndarray, class_names: list[str]) -> dict[str, str]:
    """Why a class's precision, recall or F1 is None: "<class> precision" -> reason."""
    reasons = {}
    for index, name in enumerate(class_names):
        true_rows, predicted_rows = int(matrix[index].sum()), int(matrix[:, index].sum())
        if not true_rows and not predicted_rows:
            reasons[f"{name} precision, recall, F1"] = "no test image of this class and none predicted as it"
        elif not true_rows:
            reasons[f"{name} recall"] = "no test image of this class"
        elif not predicted_rows:
            reasons[f"{name} precision"] = "no test image was predicted as this class"
    return reasons


def _defined(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def balanced_accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Mean recall over the classes present in the test split."""
    with warnings.catch_warnings():
        # scikit-learn warns when a predicted class has no test row; leaving it out is what we want.
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(labels, predicted))


def roc_auc_per_class(labels: np.ndarray, probabilities: np.ndarray) -> list[float | None]:
    """One-vs-rest ROC AUC of every class; None where the class or its complement has no test row."""
    scores = []
    for index in range(probabilities.shape[1]):
        positives = labels == index
        if positives.all() or not positives.any():
            scores.append(None)
        else:
            scores.append(float(roc_auc_score(positives, one_vs_rest_score(probabilities, index))))
    return scores


def one_vs_rest_score(probabilities: np.ndarray, index: int) -> np.ndarray:
    """The score that ranks class `index` against the rest.

    With two classes both curves are drawn from the second column: the first column is its
    complement only up to float32 rounding, which breaks ties differently and would give the two
    classes AUCs that differ in the sixth decimal."""
    if probabilities.shape[1] == 2:
        return probabilities[:, 1] if index == 1 else -probabilities[:, 1]
    return probabilities[:, index]


def roc_auc(labels: np.ndarray, probabilities: np.ndarray) -> float | None:
    """Macro one-vs-rest ROC AUC over the classes present; None if fewer than two are."""
    scores = [score for score in roc_auc_per_class(labels, probabilities) if score is not None]
    return float(np.mean(scores)) if scores else None


def row_normalise(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its total: the share of a true class that went to each prediction."""
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)


def calibration_bins(confidence: np.ndarray, correct: np.ndarray, bins: int = CALIBRATION_BINS) -> pd.DataFrame:
    """Per confidence bin: its edges, rows, mean confidence and accuracy (top-label calibration)."""
    edges = np.linspace(0, 1, bins + 1)
    # Bin i holds (edge_i, edge_i+1]; a confidence of exactly 0 joins the first bin.
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        inside = index == b
        count = int(inside.sum())
        rows.append({"low": edges[b], "high": edges[b + 1], "rows": count,
                     "confidence": float(confidence[inside].mean()) if count else np.nan,
                     "accuracy": float(correct[inside].mean()) if count else np.nan})
    return pd.DataFrame(rows)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """Row-weighted mean gap between confidence and accuracy over the bins (0 = calibrated)."""
    table = calibration_bins(confidence, correct, bins)
    filled = table[table["rows"] > 0]
    gaps = (filled["accuracy"] - filled["confidence"]).abs()
    return float((gaps * filled["rows"]).sum() / max(len(confidence), 1))


def most_confused_pairs(matrix: np.ndarray, class_names: list[str], limit: int = MOST_CONFUSED_PAIRS) -> list[dict]:
    """The off-diagonal cells with the most rows: which true class is mistaken for which."""
    rates = row_normalise(matrix)
    pairs = [
        {"true": class_names[t], "predicted": class_names[p], "count": int(matrix[t, p]),
         "share_of_true_class": float(rates[t, p])}
        for t in range(len(class_names)) for p in range(len(class_names))
        if t != p and matrix[t, p] > 0
    ]
    return sorted(pairs, key=lambda pair: (-pair["count"], -pair["share_of_true_class"]))[:limit]


def class_prediction_table(row_ids: np.ndarray, labels: np.ndarray, probabilities: np.ndarray,
                           class_names: list[str]) -> pd.DataFrame:
    """One class per image: label and prediction are class indices (label -1: unlabelled)."""
    predictions = probabilities.argmax(axis=1)
    frame = pd.DataFrame({
        "row_id": row_ids,
        "label": labels,
        "label_name": [class_names[label] if label >= 0 else None for label in labels],  # -1: unlabelled
        "prediction": predictions,
        "prediction_name": [class_names[index] for index in predictions],
        "confidence": probabilities.max(axis=1),
        "probabilities": list(probabilities),
    })
    return frame.sort_values("row_id", ignore_index=True)


def class_metrics(predictions: pd.DataFrame, class_names: list[str]) -> dict:
    """metrics.json of a single-label or binary run from its predictions table; with its
    `calibrated_probabilities` (temperature scaling, medray.calibration) also
    `expected_calibration_error_calibrated`, the same ECE of the calibrated top-class probability."""
    labels, predicted, probabilities = prediction_arrays(predictions)
    metrics = classification_metrics(labels, predicted, probabilities, class_names)
    calibrated = calibrated_arrays(predictions)
    if calibrated is not None:
        metrics["expected_calibration_error_calibrated"] = expected_calibration_error(
            calibrated.max(axis=1), labels == predicted)
    return metrics


def calibrated_arrays(predictions: pd.DataFrame) -> np.ndarray | None:
    """The (rows, classes) calibrated probabilities of a predictions table; None where it has none."""
    if "calibrated_probabilities" not in predictions:
        return None
    return np.stack(predictions["calibrated_probabilities"].to_numpy()).astype(np.float64)
