"""The report of a hand-made multi-label run folder (no Ray): the per-label table, the headline
numbers, the per-label ROC figure, undefined labels with their reason, and the per-label galleries
(CAM overlays from the maps table, or one line of text when there are no pictures)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medray.errors import MedrayError
from medray.filenames import safe_filename
from medray.report import build_report
from medray.report.multilabel_metrics import multilabel_metrics, multilabel_prediction_table, thresholds_record

from test_report_build import image_sources

NAMES = ["Atelectasis", "Effusion", "Hernia", "Mass <5 cm>"]
# Hernia has no positive test image; the last name needs escaping.


def write_multilabel_run(run_dir: Path, rows: int = 40, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """A multi-label run folder as `medray run` writes it: predictions, metrics, thresholds, data.json."""
    rng = np.random.default_rng(seed)
    labels = (rng.uniform(size=(rows, len(NAMES))) < 0.3).astype(np.int8)
    labels[:, 2] = 0
    labels[:4, 3] = -1  # uncertain, masked out
    probabilities = np.clip(0.4 * labels + rng.uniform(0, 0.65, labels.shape), 0, 1)
    thresholds = np.array([0.45, 0.5, 0.5, 0.4])
    reasons = {"Hernia": "no positive image in the validation split; kept 0.5"}
    predictions = multilabel_prediction_table([f"test/{i:03d}" for i in range(rows)], labels, probabilities,
                                              thresholds, NAMES)
    metrics = multilabel_metrics(labels, probabilities, thresholds, NAMES)
    run_dir.mkdir(parents=True)
    predictions.to_parquet(run_dir / "predictions.parquet", index=False)
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    (run_dir / "thresholds.json").write_text(json.dumps(thresholds_record(NAMES, thresholds, reasons)))
    counts = {split: {name: int((labels[:, k] == 1).sum()) * scale for k, name in enumerate(NAMES)}
              for split, scale in (("train", 5), ("val", 1), ("test", 1))}
    (run_dir / "data.json").write_text(json.dumps(
        {"kind": "parquet", "path": "/data", "class_names": NAMES, "class_counts": counts}))
    pd.DataFrame({"epoch": [1, 2], "loss": [0.7, 0.5], "val_loss": [0.8, 0.6]}).to_csv(run_dir / "history.csv",
                                                                                     index=False)
    (run_dir / "config.yaml").write_text("model:\n  backbone: baseline_cnn\n")
    return predictions, metrics


class TableRows(HTMLParser):
    """The cell texts of each row of the table with the given id."""

    def __init__(self, table_id: str):
        super().__init__()
        self.table_id, self.inside, self.rows = table_id, False, []

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.inside = dict(attrs).get("id") == self.table_id
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag in ("td", "th"):
            self.rows[-1].append("")

    def handle_endtag(self, tag):
        if tag == "table":
            self.inside = False

    def handle_data(self, data):
        if self.inside and self.rows and self.rows[-1]:
            self.rows[-1][-1] += data.strip()


def table_rows(html: str, table_id: str) -> list[list[str]]:
    parser = TableRows(table_id)
    parser.feed(html)
    return parser.rows


def test_per_label_table_shows_every_label_with_its_metrics(tmp_path):
    run_dir = tmp_path / "run"
    _, metrics = write_multilabel_run(run_dir)
    header, *rows = table_rows(build_report(run_dir).read_text(), "per-label")
    assert header[:7] == ["label", "ROC AUC", "average precision", "threshold", "precision", "recall", "F1"]
    assert [row[0] for row in rows] == NAMES
    for row, expected in zip(rows, metrics["per_label"]):
        shown = dict(zip(header, row))
        for column, key in (("ROC AUC", "roc_auc"), ("average precision", "average_precision"), ("F1", "f1")):
            if expected[key] is None:
                assert shown[column] == "n/a"
            else:
                assert float(shown[column]) == pytest.approx(expected[key], abs=5e-5)
        assert int(shown["positives"]) == expected["support"]
        assert int(shown["unknown"]) == expected["unknown"]
    hernia = dict(zip(header, rows[2]))
    assert hernia["not defined"] == "ROC AUC, average precision, recall: no positive images in the test split"
    assert hernia["threshold"] == "0.500*"  # kept by default, the reason below the table


def test_headline_numbers_are_the_multilabel_metrics(tmp_path):
    run_dir = tmp_path / "run"
    _, metrics = write_multilabel_run(run_dir, seed=3)
    html = build_report(run_dir).read_text()
    shown = dict(re.findall(r'data-metric="([a-z_0-9]+)">([^<]+)<', html))
    assert set(shown) == {"mean_roc_auc", "mean_average_precision", "macro_f1", "hamming_loss", "exact_match_ratio"}
    for name, text in shown.items():
        assert float(text) == pytest.approx(metrics[name], abs=5e-5), name
    assert "Mean ROC AUC over labels: mean over Atelectasis, Effusion, Mass &lt;5 cm&gt;" in html
    assert "4 images with an unknown (-1) label left out" in html
    assert "no positive image in the validation split; kept 0.5" in html


def test_the_per_label_roc_figure_is_drawn_and_single_label_plots_are_not(tmp_path):
    run_dir = tmp_path / "run"
    write_multilabel_run(run_dir)
    html = build_report(run_dir).read_text()
    drawn = {path.name for path in (run_dir / "plots").glob("*.png")}
    assert drawn == {"roc_curves.png", "class_distribution.png", "training_curves.png"}
    assert {Path(src).name for src in image_sources(html) if src.startswith("plots/")} == drawn
    with Image.open(run_dir / "plots" / "roc_curves.png") as figure:
        assert min(figure.size) > 300
    assert "Confusion matrix" not in html and "Reliability" not in html


def test_without_pictures_the_galleries_are_one_line(tmp_path):
    run_dir = tmp_path / "run"
    predictions, _ = write_multilabel_run(run_dir)
    html = build_report(run_dir).read_text()
    line = re.search(r'<p class="note" id="label-galleries-unavailable">(.*?)</p>', html, re.S)
    assert line, "the report has no one-line note in place of the per-label galleries"
    labels = np.stack(predictions["label"])
    predicted = np.stack(predictions["prediction"])
    effusion_fp = int(((labels[:, 1] == 0) & (predicted[:, 1] == 1)).sum())
    effusion_fn = int(((labels[:, 1] == 1) & (predicted[:, 1] == 0)).sum())
    assert f"Effusion {effusion_fp} / {effusion_fn}" in line.group(1)
    assert 'class="gallery"' not in html


def test_mistakes_of_each_label_link_to_that_labels_overlays(tmp_path):
    run_dir = tmp_path / "run"
    predictions, _ = write_multilabel_run(run_dir, seed=0)
    labels, probabilities = np.stack(predictions["label"]), np.stack(predictions["probabilities"])
    predicted = np.stack(predictions["prediction"]).astype(bool)
    records = []
    for k, name in enumerate(NAMES):  # an overlay of every (image, label) map, as explain records them
        for row_id in predictions["row_id"]:
            relative = f"gradcam/{safe_filename(name)}/{safe_filename(row_id)}.png"
            records.append({"row_id": row_id, "method": "gradcam", "target": k, "overlay_file": relative})
            (run_dir / "explain" / "overlays" / relative).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8)).save(run_dir / "explain" / "overlays" / relative)
    (run_dir / "explain" / "maps").mkdir()
    pd.DataFrame(records).to_parquet(run_dir / "explain" / "maps" / "part-00000.parquet")

    html = build_report(run_dir, examples_per_class=3).read_text()
    sources = [src for src in image_sources(html) if src.startswith("explain/overlays/")]
    k = 1  # Effusion: its most confident false positives, then its most confidently missed positives
    false_positive = np.flatnonzero((labels[:, k] == 0) & predicted[:, k])
    false_negative = np.flatnonzero((labels[:, k] == 1) & ~predicted[:, k])
    assert len(false_positive) > 3 and len(false_negative)  # the cap of 3 is reached
    expected = ([predictions["row_id"][i] for i in false_positive[np.argsort(-probabilities[false_positive, k])][:3]]
                + [predictions["row_id"][i] for i in false_negative[np.argsort(probabilities[false_negative, k])][:3]])
    shown = [src for src in sources if src.startswith("explain/overlays/gradcam/Effusion/")]
    assert shown == [f"explain/overlays/gradcam/Effusion/{safe_filename(row_id)}.png" for row_id in expected]
    assert "label-galleries-unavailable" not in html


def test_thresholds_of_another_run_are_refused(tmp_path):
    run_dir = tmp_path / "run"
    write_multilabel_run(run_dir)
    (run_dir / "thresholds.json").write_text(json.dumps(thresholds_record(["a", "b"], np.array([0.5, 0.5]), {})))
    with pytest.raises(MedrayError, match="thresholds.json does not list one threshold"):
        build_report(run_dir)


def test_a_run_without_data_json_takes_its_label_names_from_metrics_json(tmp_path):
    run_dir = tmp_path / "run"
    write_multilabel_run(run_dir)
    (run_dir / "data.json").unlink()
    header, *rows = table_rows(build_report(run_dir).read_text(), "per-label")
    assert [row[0] for row in rows] == NAMES
