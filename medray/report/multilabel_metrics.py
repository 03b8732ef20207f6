"""Test-split metrics of a multi-label run (K findings per image, independent sigmoid outputs), all
computed by scikit-learn.

Every label is scored on its own: ROC AUC and average precision rank the images by that label's
probability; precision, recall and F1 binarise it at the label's threshold, chosen on the validation
split to maximise F1 (`choose_thresholds`). The mean ROC AUC over the labels is the figure
ChestX-ray14 papers report (Wang et al. 2017; Rajpurkar et al. 2017, CheXNet).

Label matrices are (N, K) int8: 1 present, 0 absent, -1 unknown (CheXpert's U-Ignore policy, Irvin
et al. 2019). An unknown entry is left out of that label's numbers and out of the Hamming loss; the
exact-match ratio needs a whole row, so it is computed over the rows without an unknown entry and
says how many rows it left out.

As in the single-label metrics, a number that cannot be computed is None with its reason in
`undefined` (a label without positive test images has no ROC AUC), never a made-up 0, and every
mean names the labels it is the mean over.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    hamming_loss,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
)

from medray.errors import MedrayError

MULTI_LABEL = "multi_label"
UNKNOWN = -1
# Kept by a label whose validation split cannot place a threshold: the sigmoid's even odds.
DEFAULT_THRESHOLD = 0.5
# A label ranked no better than this has been learnt no better than a coin would rank it.
CHANCE_AUC = 0.5
NO_TEST_POSITIVES = "no positive images in the test split"


def choose_thresholds(labels: np.ndarray, probabilities: np.ndarray,
                      label_names: list[str]) -> tuple[np.ndarray, dict[str, str]]:
    """Per label, the probability threshold that maximises F1 on the validation split.

    labels: (N, K) int with 1/0/-1 (unknown entries are ignored); probabilities: (N, K) in [0, 1];
    label_names: K names. Returns (thresholds (K,) float64, {label name: why it kept
    DEFAULT_THRESHOLD}). The candidates are the validation probabilities themselves (scikit-learn's
    precision_recall_curve), so `probability >= threshold` reproduces the chosen F1 exactly; among
    equal F1s the lowest threshold wins (the one that misses fewest findings). A label without a
    positive or without a negative validation image keeps DEFAULT_THRESHOLD: one class alone
    says nothing about where the two separate.
    Raises MedrayError when the shapes do not agree."""
    labels, probabilities = _checked(labels, probabilities, label_names)
    thresholds = np.full(len(label_names), DEFAULT_THRESHOLD)
    reasons = {}
    for index, name in enumerate(label_names):
        known = labels[:, index] != UNKNOWN
        truth, scores = labels[known, index], probabilities[known, index]
        positives = int(truth.sum())
        if positives == 0 or positives == len(truth):
            missing = "positive" if positives == 0 else "negative"
            reasons[name] = f"no {missing} image in the validation split; kept {DEFAULT_THRESHOLD}"
            continue
        precision, recall, candidates = precision_recall_curve(truth, scores)
        # The curve's last point (recall 0) has no threshold; F1 is 0 where precision and recall are.
        precision, recall = precision[:-1], recall[:-1]
        total = precision + recall
        f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
        thresholds[index] = float(candidates[int(np.argmax(f1))])
    return thresholds, reasons


def thresholds_record(label_names: list[str], thresholds: np.ndarray, reasons: dict[str, str]) -> dict:
    """thresholds.json of a run: {"labels", "thresholds", "chosen_on": "val", "reasons"}."""
    return {"labels": list(label_names), "thresholds": [float(t) for t in thresholds], "chosen_on": "val",
            "reasons": dict(reasons)}


def multilabel_metrics(labels: np.ndarray, probabilities: np.ndarray, thresholds: np.ndarray,
                       label_names: list[str]) -> dict:
    """metrics.json of a multi-label run.

    labels: (N, K) int8 with 1/0/-1; probabilities: (N, K) sigmoid outputs; thresholds: (K,) from
    `choose_thresholds`; label_names: K names. Per label: ROC AUC and average precision over its
    known rows, and precision, recall, F1 at its threshold. Means (`mean_roc_auc`,
    `mean_average_precision`, `macro_f1`) are over the labels where the number is defined, listed
    in `macro_labels`. `hamming_loss` is the share of wrong known (image, label) entries;
    `exact_match_ratio` the share of images with every label right, over the images without an
    unknown entry (`exact_match_rows`; `rows_with_unknown_labels` were left out).
    Raises MedrayError when the shapes do not agree."""
    labels, probabilities = _checked(labels, probabilities, label_names)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.shape != (len(label_names),):
        raise MedrayError(f"{len(label_names)} labels but thresholds of shape {thresholds.shape}; "
                          "pass one threshold per label (thresholds.json of the run)")
    predicted = (probabilities >= thresholds).astype(np.int8)
    undefined: dict[str, str] = {}
    per_label = [label_metrics(labels[:, k], probabilities[:, k], predicted[:, k], thresholds[k], name, undefined)
                 for k, name in enumerate(label_names)]

    means, macro_labels = {}, {}
    for key, field, what in (("mean_roc_auc", "roc_auc", "ROC AUC"),
                             ("mean_average_precision", "average_precision", "average precision"),
                             ("macro_f1", "f1", "F1")):
        covered = [row for row in per_label if row[field] is not None]
        means[key] = float(np.mean([row[field] for row in covered])) if covered else None
        macro_labels[key] = [row["label"] for row in covered]
        if not covered:
            undefined[key] = f"no label has a test {what} to average"

    known = labels != UNKNOWN
    full_rows = known.all(axis=1)
    if known.any():
        # Flattened over the known entries: on a matrix without unknowns this is hamming_loss itself.
        hamming = float(hamming_loss(labels[known], predicted[known]))
    else:
        hamming = None
        undefined["hamming_loss"] = "every test label is unknown (-1)"
    if full_rows.any():
        exact = float(accuracy_score(labels[full_rows], predicted[full_rows]))
    else:
        exact = None
        undefined["exact_match_ratio"] = "every test image has at least one unknown (-1) label"

    return {
        "task": MULTI_LABEL,
        "rows": int(len(labels)),
        "mean_roc_auc": means["mean_roc_auc"],
        "mean_average_precision": means["mean_average_precision"],
        "macro_f1": means["macro_f1"],
        "hamming_loss": hamming,
        "exact_match_ratio": exact,
        "hamming_loss_entries": int(known.sum()),
        "exact_match_rows": int(full_rows.sum()),
        "rows_with_unknown_labels": int((~full_rows).sum()),
        "roc_auc_per_label": {row["label"]: row["roc_auc"] for row in per_label},
        "average_precision_per_label": {row["label"]: row["average_precision"] for row in per_label},
        "per_label": per_label,
        # which labels each mean is the mean over
        "macro_labels": macro_labels,
        "undefined": undefined,
        "class_names": list(label_names),  # the K label names, as data.json calls them
        "warnings": chance_warnings(per_label),
    }


def label_metrics(truth: np.ndarray, scores: np.ndarray, predicted: np.ndarray, threshold: float, name: str,
                  undefined: dict[str, str]) -> dict:
    """One label's row of `per_label`, over the images where it is known. Its undefined numbers are
    in the row's "undefined" ({"<numbers>": reason}) and, as "<label> <numbers>", added to `undefined`."""
    known = truth != UNKNOWN
    truth, scores, predicted = truth[known], scores[known], predicted[known]
    positives = int(truth.sum())
    negatives = int(len(truth) - positives)
    row = {"label": name, "roc_auc": None, "average_precision": None, "threshold": float(threshold),
           "precision": None, "recall": None, "f1": None,
           "support": positives, "negatives": negatives, "unknown": int((~known).sum()), "undefined": {}}
    missing = label_scores(row, truth, scores, predicted) if len(truth) else {
        "every test label is unknown (-1)": ["ROC AUC", "average precision", "precision", "recall", "F1"]}
    row["undefined"] = {", ".join(numbers): reason for reason, numbers in missing.items()}
    undefined.update({f"{name} {numbers}": reason for numbers, reason in row["undefined"].items()})
    return row


def label_scores(row: dict, truth: np.ndarray, scores: np.ndarray, predicted: np.ndarray) -> dict[str, list[str]]:
    """Fills the scores of `row` from the label's known images; returns {reason: the numbers it leaves None}."""
    positives, negatives = row["support"], row["negatives"]
    # zero_division=nan: an undefined ratio stays undefined instead of counting as 0.
    precision, recall, f1, _ = precision_recall_fscore_support(
        truth, predicted, average="binary", pos_label=1, zero_division=np.nan)
    row.update(precision=_defined(precision), recall=_defined(recall), f1=_defined(f1))
    missing: dict[str, list[str]] = {}
    if positives and negatives:
        row["roc_auc"] = float(roc_auc_score(truth, scores))
    elif negatives:
        missing[NO_TEST_POSITIVES] = ["ROC AUC"]
    else:
        missing["no negative images in the test split"] = ["ROC AUC"]
    if positives:
        row["average_precision"] = float(average_precision_score(truth, scores))
    else:
        missing[NO_TEST_POSITIVES] += ["average precision", "recall"]
    if row["precision"] is None:
        # F1 is undefined only when there is neither a positive image nor a positive prediction.
        missing["no test image was predicted positive"] = ["precision"] + (["F1"] if row["f1"] is None else [])
    return missing


def chance_warnings(per_label: list[dict]) -> list[str]:
    """Labels the model ranks no better than chance, in one plain-language line for the report."""
    weak = [f"{row['label']} ({row['roc_auc']:.3f})" for row in per_label
            if row["roc_auc"] is not None and row["roc_auc"] <= CHANCE_AUC]
    if not weak:
        return []
    return [f"the model ranks {', '.join(weak)} no better than chance (ROC AUC at or below {CHANCE_AUC}); "
            "check that the label columns match the images and that those labels have training positives"]


def multilabel_prediction_table(row_ids: np.ndarray, labels: np.ndarray, probabilities: np.ndarray,
                                thresholds: np.ndarray, label_names: list[str]) -> pd.DataFrame:
    """predictions.parquet of a multi-label run, one row per test image, sorted by row_id.

    row_ids: (N,) strings; labels: (N, K) int with 1/0/-1; probabilities: (N, K); thresholds: (K,).
    Columns: row_id, label (list<int8>), probabilities (list<float32>), prediction (list<int8>,
    probability >= threshold), prediction_name (predicted names joined by "|", "" for none),
    top_label (int64 argmax), confidence (float32 max probability)."""
    labels, probabilities = _checked(labels, probabilities, label_names)
    predicted = (probabilities >= np.asarray(thresholds, dtype=np.float64)).astype(np.int8)
    frame = pd.DataFrame({
        "row_id": np.asarray(row_ids).astype(str),
        "label": list(labels.astype(np.int8)),
        "probabilities": list(probabilities.astype(np.float32)),
        "prediction": list(predicted),
        "prediction_name": ["|".join(name for name, on in zip(label_names, row) if on) for row in predicted],
        "top_label": probabilities.argmax(axis=1).astype(np.int64),
        "confidence": probabilities.max(axis=1).astype(np.float32),
    })
    return frame.sort_values("row_id", ignore_index=True)


def multilabel_prediction_arrays(predictions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The (N, K) label matrix (int8) and probability matrix (float64) of a multi-label predictions table."""
    labels = np.stack(predictions["label"].to_numpy()).astype(np.int8)
    probabilities = np.stack(predictions["probabilities"].to_numpy()).astype(np.float64)
    return labels, probabilities


def _checked(labels, probabilities, label_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    labels, probabilities = np.asarray(labels), np.asarray(probabilities, dtype=np.float64)
    expected = (len(labels), len(label_names))
    if labels.ndim != 2 or labels.shape != expected or probabilities.shape != expected:
        raise MedrayError(f"multi-label metrics need labels and probabilities of shape (images, {len(label_names)} "
                          f"labels); got {labels.shape} and {probabilities.shape}")
    if not np.isin(labels, (1, 0, UNKNOWN)).all():
        raise MedrayError("multi-label labels hold values other than 1, 0 and -1 (unknown); "
                          "check the label column of the data")
    return labels.astype(np.int8), probabilities


def _defined(value: float) -> float | None:
    return None if np.isnan(value) else float(value)
