"""A full `medray run` on PneumoniaMNIST (the shared MedMNIST file): its report shows exactly the
numbers of metrics.json, and those are scikit-learn's on the run's predictions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from medray.cli import main

from conftest import PNEUMONIAMNIST, cli_args
from test_report_build import RUN_PLOTS, image_sources

pytestmark = pytest.mark.skipif(not PNEUMONIAMNIST.is_file(), reason=f"{PNEUMONIAMNIST} is not on this machine")


@pytest.fixture(scope="module")
def pneumonia_run(tmp_path_factory, ray_cluster):
    out = tmp_path_factory.mktemp("results")
    overrides = ["data.source=npz", f"data.path={PNEUMONIAMNIST}", "data.class_names=[normal, pneumonia]",
                 "model.input_size=28", "train.epochs=1", f"output.dir={out}", "output.run_id=pneumonia",
                 # the report's numbers are the point here; the explain stage has its own tests
                 "explain.enabled=false", "train.batch_size=128"]
    assert main(cli_args(overrides)) == 0
    return out / "pneumonia"


def test_report_numbers_equal_metrics_json(pneumonia_run):
    metrics = json.loads((pneumonia_run / "metrics.json").read_text())
    html = (pneumonia_run / "report.html").read_text()
    shown = dict(re.findall(r'data-metric="([a-z_0-9]+)">([^<]+)<', html))
    assert len(shown) == 6
    assert shown == {name: f"{metrics[name]:.4f}" for name in shown}
    assert f"<b>{metrics['rows']}</b> test images" in html and metrics["rows"] == 624


def test_metrics_json_is_scikit_learn_on_the_predictions(pneumonia_run):
    predictions = pd.read_parquet(pneumonia_run / "predictions.parquet")
    metrics = json.loads((pneumonia_run / "metrics.json").read_text())
    labels, predicted = predictions["label"], predictions["prediction"]
    positive = predictions["probabilities"].map(lambda p: p[1])
    assert metrics["accuracy"] == pytest.approx(accuracy_score(labels, predicted))
    assert metrics["macro_f1"] == pytest.approx(f1_score(labels, predicted, average="macro"))
    assert metrics["roc_auc_ovr"] == pytest.approx(roc_auc_score(labels, positive), abs=1e-6)
    assert [row["support"] for row in metrics["per_class"]] == [234, 390]


def test_binary_run_draws_every_plot_and_links_it(pneumonia_run):
    # explain is off here, so no map-spread plot; temperature scaling runs on every run
    plots = RUN_PLOTS | {"reliability_diagram_calibrated.png"}
    assert {path.name for path in (pneumonia_run / "plots").glob("*.png")} == plots
    sources = image_sources((pneumonia_run / "report.html").read_text())
    # plots/test_images/ holds the misclassified scans' thumbnails, not plots
    assert {Path(src).name for src in sources if Path(src).parent == Path("plots")} == plots
    metrics = json.loads((pneumonia_run / "metrics.json").read_text())
    assert metrics["class_names"] == ["normal", "pneumonia"] and len(metrics["confusion_matrix"]) == 2
