"""Multi-label metrics: a hand-computed case, scikit-learn's own numbers, labels without test
positives, masked (-1) entries, thresholds chosen on validation, and the predictions table."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, hamming_loss, roc_auc_score

from medray.errors import MedrayError
from medray.report.multilabel_metrics import (
    choose_thresholds,
    multilabel_metrics,
    multilabel_prediction_table,
    thresholds_record,
)

NAMES = ["effusion", "mass", "nodule"]
# Six images, three findings; the numbers in the first test are worked out by hand from these.
LABELS = np.array([[1, 0, 0],
                   [0, 1, 0],
                   [1, 1, 0],
                   [0, 0, 1],
                   [0, 0, 0],
                   [1, 0, 1]], dtype=np.int8)
PROBABILITIES = np.array([[0.9, 0.1, 0.2],
                          [0.2, 0.8, 0.1],
                          [0.7, 0.6, 0.3],
                          [0.4, 0.3, 0.6],
                          [0.1, 0.2, 0.4],
                          [0.3, 0.7, 0.5]])
THRESHOLDS = np.array([0.5, 0.5, 0.55])


def random_case(rows: int, labels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = (rng.uniform(size=(rows, labels)) < 0.35).astype(np.int8)
    truth[0], truth[1] = 1, 0  # every label has a positive and a negative
    return truth, np.clip(0.35 * truth + rng.uniform(0, 0.7, truth.shape), 0, 1)


def test_known_case_gives_the_hand_computed_numbers():
    metrics = multilabel_metrics(LABELS, PROBABILITIES, THRESHOLDS, NAMES)
    rows = {row["label"]: row for row in metrics["per_label"]}
    # effusion: positives 0.9 0.7 0.3 against negatives 0.2 0.4 0.1: 8 of 9 pairs ordered right
    assert rows["effusion"]["roc_auc"] == pytest.approx(8 / 9)
    # ranked P P N P N N: precision 1 at recall 1/3 and 2/3, 3/4 at recall 1
    assert rows["effusion"]["average_precision"] == pytest.approx(1 / 3 + 1 / 3 + 1 / 3 * 3 / 4)
    assert (rows["effusion"]["precision"], rows["effusion"]["recall"]) == (pytest.approx(1.0), pytest.approx(2 / 3))
    assert rows["effusion"]["f1"] == pytest.approx(0.8)
    assert rows["mass"]["roc_auc"] == pytest.approx(7 / 8)
    assert rows["mass"]["precision"] == pytest.approx(2 / 3)
    assert rows["nodule"]["roc_auc"] == pytest.approx(1.0)
    assert rows["nodule"]["f1"] == pytest.approx(2 / 3)  # at 0.55 only one of its two positives is found
    assert [row["support"] for row in metrics["per_label"]] == [3, 2, 2]
    assert metrics["mean_roc_auc"] == pytest.approx((8 / 9 + 7 / 8 + 1) / 3)
    assert metrics["macro_f1"] == pytest.approx((0.8 + 0.8 + 2 / 3) / 3)
    # only the last image is wrong, in all three labels
    assert metrics["hamming_loss"] == pytest.approx(3 / 18)
    assert metrics["exact_match_ratio"] == pytest.approx(5 / 6)
    assert metrics["task"] == "multi_label" and metrics["rows"] == 6
    assert metrics["undefined"] == {}


def test_numbers_equal_scikit_learns_on_the_whole_matrix():
    labels, probabilities = random_case(80, 5, seed=3)
    thresholds = np.array([0.3, 0.4, 0.5, 0.6, 0.45])
    names = [f"finding {k}" for k in range(5)]
    metrics = multilabel_metrics(labels, probabilities, thresholds, names)
    predicted = (probabilities >= thresholds).astype(int)
    for k, row in enumerate(metrics["per_label"]):
        assert row["roc_auc"] == pytest.approx(roc_auc_score(labels[:, k], probabilities[:, k]))
        assert row["average_precision"] == pytest.approx(average_precision_score(labels[:, k], probabilities[:, k]))
        assert row["f1"] == pytest.approx(f1_score(labels[:, k], predicted[:, k]))
        assert row["threshold"] == thresholds[k]
    assert metrics["mean_roc_auc"] == pytest.approx(roc_auc_score(labels, probabilities, average="macro"))
    assert metrics["mean_average_precision"] == pytest.approx(
        average_precision_score(labels, probabilities, average="macro"))
    assert metrics["macro_f1"] == pytest.approx(f1_score(labels, predicted, average="macro"))
    assert metrics["hamming_loss"] == pytest.approx(hamming_loss(labels, predicted))
    assert metrics["exact_match_ratio"] == pytest.approx(accuracy_score(labels, predicted))
    assert metrics["roc_auc_per_label"] == {row["label"]: row["roc_auc"] for row in metrics["per_label"]}


def test_a_label_without_test_positives_has_no_auc_and_says_why():
    labels = LABELS.copy()
    labels[:, 2] = 0  # no nodule in the test split
    metrics = multilabel_metrics(labels, PROBABILITIES, THRESHOLDS, NAMES)
    nodule = metrics["per_label"][2]
    assert nodule["roc_auc"] is None and nodule["average_precision"] is None and nodule["recall"] is None
    assert metrics["roc_auc_per_label"]["nodule"] is None
    assert metrics["undefined"]["nodule ROC AUC, average precision, recall"] == "no positive images in the test split"
    # its one false alarm (0.6 >= 0.55) is a real precision of 0, not an undefined one
    assert nodule["precision"] == 0.0
    assert metrics["macro_labels"]["mean_roc_auc"] == ["effusion", "mass"]
    assert metrics["mean_roc_auc"] == pytest.approx((8 / 9 + 7 / 8) / 2)


def test_no_label_with_an_auc_leaves_the_mean_undefined_not_zero():
    labels = np.zeros_like(LABELS)
    metrics = multilabel_metrics(labels, PROBABILITIES, THRESHOLDS, NAMES)
    assert metrics["mean_roc_auc"] is None and metrics["mean_average_precision"] is None
    assert metrics["macro_labels"]["mean_roc_auc"] == []
    assert "mean_roc_auc" in metrics["undefined"]


def test_unknown_entries_are_left_out_of_every_number():
    labels, probabilities = random_case(60, 3, seed=7)
    masked = labels.copy()
    masked[10:25, 1] = -1
    masked[40:45, 2] = -1
    thresholds = np.full(3, 0.5)
    metrics = multilabel_metrics(masked, probabilities, thresholds, ["a", "b", "c"])
    known = masked[:, 1] != -1
    mass = metrics["per_label"][1]
    assert mass["roc_auc"] == pytest.approx(roc_auc_score(labels[known, 1], probabilities[known, 1]))
    assert mass["average_precision"] == pytest.approx(average_precision_score(labels[known, 1], probabilities[known, 1]))
    assert (mass["support"] + mass["negatives"], mass["unknown"]) == (45, 15)
    # a masked entry's probability changes nothing
    moved = probabilities.copy()
    moved[10:25, 1] = 1 - moved[10:25, 1]
    assert multilabel_metrics(masked, moved, thresholds, ["a", "b", "c"]) == metrics

    full = (masked != -1).all(axis=1)
    predicted = (probabilities >= thresholds).astype(int)
    assert (metrics["exact_match_rows"], metrics["rows_with_unknown_labels"]) == (40, 20)
    assert metrics["exact_match_ratio"] == pytest.approx(accuracy_score(masked[full], predicted[full]))
    entries = masked != -1
    assert metrics["hamming_loss_entries"] == 160
    assert metrics["hamming_loss"] == pytest.approx((masked[entries] != predicted[entries]).mean())


def test_the_threshold_is_the_validation_probability_with_the_best_f1():
    # threshold 0.35 finds all three positives at the cost of one false alarm: F1 6/7, the best
    labels = np.array([[0], [0], [1], [1], [0], [1]])
    probabilities = np.array([[0.1], [0.3], [0.35], [0.8], [0.4], [0.9]])
    thresholds, reasons = choose_thresholds(labels, probabilities, ["effusion"])
    assert thresholds.tolist() == [0.35] and reasons == {}
    assert f1_score(labels[:, 0], probabilities[:, 0] >= 0.35) == pytest.approx(6 / 7)


def test_the_chosen_threshold_beats_every_other_cut_on_validation():
    labels, probabilities = random_case(120, 4, seed=11)
    thresholds, _ = choose_thresholds(labels, probabilities, list("abcd"))
    for k in range(4):
        chosen = f1_score(labels[:, k], probabilities[:, k] >= thresholds[k])
        best = max(f1_score(labels[:, k], probabilities[:, k] >= cut) for cut in np.unique(probabilities[:, k]))
        assert chosen == pytest.approx(best)


def test_unknown_validation_entries_do_not_move_the_threshold():
    labels = np.array([[0], [0], [1], [1], [0], [1], [-1], [-1]])
    probabilities = np.array([[0.1], [0.3], [0.35], [0.8], [0.4], [0.9], [0.2], [0.05]])
    thresholds, _ = choose_thresholds(labels, probabilities, ["effusion"])
    assert thresholds.tolist() == [0.35]  # as unknown, 0.2 and 0.05 would be positives that pull it down


def test_a_label_without_validation_positives_or_negatives_keeps_one_half():
    labels = np.array([[0, 1, 1], [0, 1, 0], [0, 1, 1], [-1, 1, 0]])
    probabilities = np.array([[0.9, 0.2, 0.7], [0.1, 0.3, 0.2], [0.6, 0.8, 0.9], [0.2, 0.1, 0.3]])
    thresholds, reasons = choose_thresholds(labels, probabilities, ["hernia", "effusion", "mass"])
    assert thresholds[:2].tolist() == [0.5, 0.5]
    assert "no positive image in the validation split" in reasons["hernia"]
    assert "no negative image in the validation split" in reasons["effusion"]
    assert set(reasons) == {"hernia", "effusion"}
    record = thresholds_record(["hernia", "effusion", "mass"], thresholds, reasons)
    assert record == {"labels": ["hernia", "effusion", "mass"], "thresholds": [0.5, 0.5, 0.7], "chosen_on": "val",
                      "reasons": reasons}


def test_prediction_table_has_the_multilabel_layout(tmp_path):
    table = multilabel_prediction_table(np.array(["b", "a", "c", "d", "e", "f"]), LABELS, PROBABILITIES, THRESHOLDS,
                                        NAMES)
    assert table["row_id"].tolist() == ["a", "b", "c", "d", "e", "f"]
    first = table.iloc[1]  # row "b" = the first image
    assert first["label"].tolist() == [1, 0, 0] and first["prediction"].tolist() == [1, 0, 0]
    assert first["prediction_name"] == "effusion" and first["top_label"] == 0
    assert first["confidence"] == pytest.approx(0.9)
    by_id = table.set_index("row_id")
    assert by_id.loc["c", "prediction_name"] == "effusion|mass"
    assert by_id.loc["e", "prediction_name"] == ""  # nothing over its threshold: no finding
    table.to_parquet(tmp_path / "predictions.parquet", index=False)
    schema = pq.read_schema(tmp_path / "predictions.parquet")
    assert schema.field("label").type == pa.list_(pa.int8())
    assert schema.field("prediction").type == pa.list_(pa.int8())
    assert schema.field("probabilities").type == pa.list_(pa.float32())
    assert schema.field("top_label").type == pa.int64() and schema.field("confidence").type == pa.float32()
    assert pd.read_parquet(tmp_path / "predictions.parquet")["row_id"].tolist() == table["row_id"].tolist()


def test_shapes_that_do_not_match_the_labels_are_refused():
    with pytest.raises(MedrayError, match="shape"):
        multilabel_metrics(LABELS, PROBABILITIES[:, :2], THRESHOLDS, NAMES)
    with pytest.raises(MedrayError, match="one threshold per label"):
        multilabel_metrics(LABELS, PROBABILITIES, THRESHOLDS[:2], NAMES)
    with pytest.raises(MedrayError, match="other than 1, 0 and -1"):
        multilabel_metrics(LABELS * 2, PROBABILITIES, THRESHOLDS, NAMES)
