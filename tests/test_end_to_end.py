"""The main job on a tiny config writes every output, with finite metrics."""

import json
import math
import zipfile

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from PIL import Image

from medray.task import SingleLabelTask
from medray.config import load_config
from medray.data.manifest import prepare_source
from medray.data.pipeline import read_split
from medray.data.sources import discover
from medray.evaluate import predict
from medray.models.classifier import load_model_file



def test_run_writes_config_metrics_and_confusion_matrix(finished_run):
    assert "backbone: baseline_cnn" in (finished_run / "config.yaml").read_text()
    metrics = json.loads((finished_run / "metrics.json").read_text())
    assert metrics["rows"] == 24
    for name in ("accuracy", "macro_f1", "roc_auc_ovr"):
        assert math.isfinite(metrics[name]) and 0 <= metrics[name] <= 1
    assert np.sum(metrics["confusion_matrix"]) == 24
    with Image.open(finished_run / "confusion_matrix.png") as image:
        assert image.width > 200 and image.height > 200


def test_predictions_have_one_row_per_test_image(finished_run):
    predictions = pd.read_parquet(finished_run / "predictions.parquet")
    assert len(predictions) == 24 and predictions["row_id"].is_unique
    probabilities = np.stack(predictions["probabilities"].to_numpy())
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-4)
    assert (predictions["prediction"] == probabilities.argmax(axis=1)).all()


def test_predictions_taken_from_the_explain_job_equal_a_separate_prediction_pass(finished_run, ray_cluster):
    config = load_config(finished_run / "config.yaml")
    source, _ = prepare_source(discover(config.data), config.data, finished_run)
    test = read_split(source, "test", config.model.input_size, config.data)
    direct = predict(test, (finished_run / "model.keras").read_bytes(), "baseline_cnn", SingleLabelTask(tuple(source.class_names)),
                     batch_size=16, concurrency=1)
    recorded = pd.read_parquet(finished_run / "predictions.parquet")
    assert direct["row_id"].tolist() == recorded["row_id"].tolist()
    assert np.allclose(np.stack(direct["probabilities"]), np.stack(recorded["probabilities"]), atol=1e-5)


def test_history_has_every_epoch_and_model_loads_in_safe_mode(finished_run):
    history = pd.read_csv(finished_run / "history.csv")
    assert list(history["epoch"]) == [1, 2]
    assert {"loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc"} <= set(history.columns)
    # The Keras v3 zip format: only there does safe_mode refuse code; legacy HDF5 ignores it.
    # Every epoch's checkpoint, not only the first: tf-keras fell back to HDF5 from its second
    # save in Ray Train's training thread.
    saved = [finished_run / "model.keras", *(finished_run / "checkpoints").rglob("model.keras")]
    assert len(saved) >= 3 and all(zipfile.is_zipfile(path) for path in saved)
    model = load_model_file(finished_run / "model.keras")
    assert model.output_shape == (None, 3)


def test_gradcam_maps_and_overlays_cover_every_test_image(finished_run):
    maps = pq.read_table(finished_run / "explain" / "maps").to_pandas()
    assert len(maps) == 24 and maps["row_id"].is_unique
    cams = np.stack(maps["cam"].to_numpy()).astype(np.float32)
    assert cams.min() >= 0 and cams.max() <= 1
    overlays = sorted((finished_run / "explain" / "overlays" / "gradcam").rglob("*.png"))
    assert len(overlays) == 24
    assert {path.parent.name for path in overlays} <= {"no_lesion", "bright_round_lesion", "dark_irregular_lesion"}
    with Image.open(overlays[0]) as image:
        assert image.mode == "RGB" and image.width >= 224


def test_summary_names_the_test_accuracy_and_the_results_folder(finished_run):
    summary = (finished_run / "summary.txt").read_text()
    assert "test       accuracy" in summary and str(finished_run) in summary
