"""A multi-label run end to end: two Ray Train workers, thresholds chosen on validation, per-label
metrics, maps for every label over its threshold plus the top label, per-label checks, report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq


LABELS = ["bright_round_lesion", "dark_irregular_lesion"]


def test_two_workers_train_k_sigmoid_units_in_sync(multilabel_run):
    history = pd.read_csv(multilabel_run / "history.csv")
    assert len(history) == 2 and (history["replica_weight_spread"] == 0).all()
    assert {"val_auc", "val_accuracy", "val_loss"} <= set(history.columns)
    from medray.models.classifier import load_model_file

    head = load_model_file(multilabel_run / "model.keras").get_layer("probabilities")
    assert head.units == 2 and head.get_config()["activation"] == "sigmoid"


def test_thresholds_are_chosen_on_the_validation_split_and_predictions_use_them(multilabel_run):
    chosen = json.loads((multilabel_run / "thresholds.json").read_text())
    assert chosen["chosen_on"] == "val" and chosen["labels"] == LABELS and len(chosen["thresholds"]) == 2
    predictions = pd.read_parquet(multilabel_run / "predictions.parquet")
    assert len(predictions) == 24
    probabilities = np.stack(predictions["probabilities"].to_numpy())
    predicted = np.stack(predictions["prediction"].to_numpy())
    np.testing.assert_array_equal(predicted, probabilities >= np.asarray(chosen["thresholds"]))
    labels = np.stack(predictions["label"].to_numpy())
    assert labels.shape == (24, 2) and set(np.unique(labels)) <= {0, 1}


def test_metrics_are_per_label_with_the_mean_roc_auc(multilabel_run):
    metrics = json.loads((multilabel_run / "metrics.json").read_text())
    assert metrics["task"] == "multi_label"
    assert [row["label"] for row in metrics["per_label"]] == LABELS
    assert {"mean_roc_auc", "hamming_loss", "exact_match_ratio"} <= set(metrics)
    summary = (multilabel_run / "summary.txt").read_text()
    assert "mean ROC AUC" in summary and "accuracy" not in summary.split("test ")[1].split("\n")[0]


def test_every_image_gets_maps_for_its_predicted_labels_and_its_top_label_from_one_job(multilabel_run):
    maps = pq.read_table(multilabel_run / "explain" / "maps").to_pandas()
    chosen = np.asarray(json.loads((multilabel_run / "thresholds.json").read_text())["thresholds"])
    assert maps["row_id"].nunique() == 24
    for row_id, rows in maps.groupby("row_id"):
        probabilities = rows["probabilities"].iloc[0]
        expected = set(np.flatnonzero(probabilities >= chosen)) | {int(np.argmax(probabilities))}
        assert set(rows["target"]) == expected, row_id
        # a map's label and prediction are those of the label it explains
        truth = np.stack(rows["labels"].to_numpy())[np.arange(len(rows)), rows["target"].to_numpy()]
        np.testing.assert_array_equal(rows["label"].to_numpy(), truth)
    overlays = {path.parent.name for path in (multilabel_run / "explain" / "overlays" / "gradcam").rglob("*.png")}
    assert overlays <= set(LABELS) and overlays


def test_localisation_is_reported_per_label_on_the_images_that_have_its_lesion(multilabel_run):
    checks = json.loads((multilabel_run / "explain" / "checks.json").read_text())["gradcam"]
    assert set(checks["per_target"]) <= set(LABELS)
    maps = pq.read_table(multilabel_run / "explain" / "maps").to_pandas()
    for label, figures in checks["per_target"].items():
        explained = maps[maps["target"] == LABELS.index(label)]
        # the pointing game applies only where the explained label's lesion is present
        assert figures["lesion_maps"] == int((explained["label"] == 1).sum() - explained["empty"][explained["label"] == 1].sum())
    assert "sample_maps" in checks and checks["sample_images"] == 16


def test_the_report_has_a_row_per_label(multilabel_run):
    report = (multilabel_run / "report.html").read_text()
    for label in LABELS:
        assert label in report
    assert "Hamming" in report
