"""The scorecard's figures: each with the number of images it rests on and a bootstrap interval,
and insertion/deletion per true class, so that an average below random order is explained."""

import numpy as np
import pandas as pd

from medray.explain.scorecard import figure, format_scorecard, sample_figures

CLASSES = ["no_lesion", "lesion"]


def test_a_figure_counts_its_values_and_its_interval_holds_the_value():
    values = np.r_[np.random.default_rng(0).random(200), np.nan, np.nan]
    result = figure(values)
    assert result["n"] == 200
    assert result["ci"][0] < result["value"] < result["ci"][1]
    assert result["ci"][1] - result["ci"][0] < 0.2
    assert figure(np.array([np.nan])) is None and figure(np.array([0.5]))["ci"] is None


def sample_rows():
    """A lesion class whose maps find the lesion (insertion far above random order) and a
    lesion-free class where revealing the map's bright patches first looks like a lesion
    (insertion far below), in proportions that put the average below random order."""
    rng = np.random.default_rng(1)
    rows = []
    for index in range(90):
        label = 0 if index < 60 else 1
        insertion = 0.1 if label == 0 else 0.9
        rows.append({"row_id": f"r{index}", "label": label, "prediction": label, "target": label,
                     "method": "gradcam", "layer": "cam_features", "deletion_auc": 0.3,
                     "random_order_deletion_auc": 0.5, "insertion_auc": insertion + rng.normal(0, 0.01),
                     "random_order_insertion_auc": 0.5 + rng.normal(0, 0.01),
                     "cascade_rank_corr": np.array([0.5, 0.1]), "cascade_ssim": np.array([0.3, 0.05]),
                     "label_random_rank_corr": 0.1, "label_random_ssim": 0.05,
                     "shared_rank_corr": 0.6, "shared_ssim": 0.4})
    return pd.DataFrame(rows)


def test_insertion_below_random_on_average_is_shown_per_class():
    score = sample_figures(sample_rows(), ["head", "conv0"], CLASSES)
    assert score["insertion_auc"]["value"] < score["random_order_insertion_auc"]["value"]
    per_class = score["per_class"]
    assert per_class["no_lesion"]["maps"] == 60 and per_class["lesion"]["maps"] == 30
    assert per_class["no_lesion"]["insertion_auc"] < 0.2 and per_class["lesion"]["insertion_auc"] > 0.8
    assert score["verdict"] == "passed"


def test_the_printed_scorecard_names_each_class_with_its_count_and_the_verdict():
    score = {"maps": 90, "images": 90, "empty_maps": 0, "empty_share": 0.0, "lesion_maps": 30,
             "pointing_game": figure(np.ones(30)), "energy_in_lesion": figure(np.full(30, 0.2)),
             "localisation_chance": figure(np.full(30, 0.01)),
             **sample_figures(sample_rows(), ["head", "conv0"], CLASSES)}
    text = format_scorecard({"gradcam": score})
    assert "no_lesion" in text and "(n=  60)" in text and "(n=  30)" in text
    assert "pointing game 1.000 [1.000, 1.000]" in text and "verdict: passed" in text
