"""The scorecard's figures: each with the number of images it rests on and a bootstrap interval,
and ROAD per true class with a verdict, so that an average below random order is explained and never
called a pass."""

import numpy as np
import pandas as pd

from medray.explain import verdicts
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
    """A lesion class whose maps find the lesion (ROAD far above random order) and a lesion-free
    class whose maps' most relevant pixels matter less than random ones (ROAD below), in
    proportions that put the average below random order."""
    rng = np.random.default_rng(1)
    rows = []
    for index in range(90):
        label = 0 if index < 60 else 1
        road = (-0.2 if label == 0 else 0.3) + rng.normal(0, 0.01)
        rows.append({"row_id": f"r{index}", "label": label, "prediction": label, "target": label,
                     "method": "gradcam", "layer": "cam_features", "road": road,
                     "road_morf": np.full(9, 0.5 - road), "road_lerf": np.full(9, 0.5 + road),
                     "random_order_road": rng.normal(0, 0.01), "concentration": 0.3,
                     "cascade_rank_corr": np.array([0.5, 0.1]), "cascade_ssim": np.array([0.3, 0.05]),
                     "label_random_rank_corr": 0.1, "label_random_ssim": 0.05,
                     "shared_rank_corr": 0.6, "shared_ssim": 0.4})
    return pd.DataFrame(rows)


def test_road_below_random_on_average_is_shown_per_class_and_never_called_faithful_or_passed():
    score = sample_figures(sample_rows(), ["head", "conv0"], CLASSES)
    assert score["road"]["value"] < score["random_order_road"]["value"]
    per_class = score["per_class"]
    assert per_class["no_lesion"]["maps"] == 60 and per_class["lesion"]["maps"] == 30
    assert per_class["no_lesion"]["verdict"] == verdicts.NO_BETTER and per_class["lesion"]["verdict"] == verdicts.FAITHFUL
    assert score["randomisation_verdict"] == "passed"
    assert score["verdict"].startswith("no better than random") and "passed" not in score["verdict"]
    assert "faithful: lesion" in score["verdict"] and "no better than random: no_lesion" in score["verdict"]


def test_a_class_whose_maps_are_spread_is_no_localised_evidence():
    rows = sample_rows()
    rows.loc[rows["label"] == 1, "concentration"] = 0.06
    assert sample_figures(rows, ["head", "conv0"], CLASSES)["per_class"]["lesion"]["verdict"] == verdicts.SPREAD


def test_the_printed_scorecard_names_each_class_with_its_count_and_the_verdict():
    score = {"maps": 90, "images": 90, "empty_maps": 0, "empty_share": 0.0, "lesion_maps": 30,
             "pointing_game": figure(np.ones(30)), "energy_in_lesion": figure(np.full(30, 0.2)),
             "localisation_chance": figure(np.full(30, 0.01)),
             **sample_figures(sample_rows(), ["head", "conv0"], CLASSES),
             "cost": {"seconds": {"maps": 1.0, "ROAD": 9.0}, "shared": {"ROAD, random order": 4.0}, "per_map": 0.111}}
    text = format_scorecard({"gradcam": score})
    assert "no_lesion" in text and "(n=  60)" in text and "(n=  30)" in text
    assert "pointing game 1.000 [1.000, 1.000]" in text and "verdict: no better than random" in text
    assert "cost of the checks: 0.111 s per sampled map (maps 1.0 s, ROAD 9.0 s)" in text
    for line in text.splitlines():
        if "ROAD" in line:
            assert "passed" not in line, line


def test_unlabelled_images_are_grouped_by_predicted_class_and_the_lines_say_so(tmp_path):
    # The sample checks of a user's model on images without labels (-1), as `medray explain --model` runs them.
    from medray.config import load_config
    from medray.explain.sample_checks import sample_checks
    from medray.keras_setup import keras
    from medray.models.actor import UserModelSpec
    from medray.models.preprocessing import DECLARED_PREPROCESSING, ModelInput
    from medray.task import SingleLabelTask

    from conftest import DEMO_CONFIG

    # Class 1 when the image's left half is brighter than its right, else class 0 (the last class is 2).
    inputs = keras.Input((8, 8, 1))
    features = keras.layers.Conv2D(2, 1, name="features", use_bias=False)(inputs)
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(features))
    model = keras.Model(inputs, outputs)
    model.get_layer("features").set_weights([np.ones((1, 1, 1, 2), np.float32)])
    model.layers[-1].set_weights([np.array([[0.0, 1.0, -5.0], [0.0, 1.0, -5.0]], np.float32), np.zeros(3, np.float32)])
    model.save(tmp_path / "user.keras")
    pixels = np.zeros((6, 8, 8), np.uint8)
    pixels[:4] = 200  # bright: class 1 predicted; dark: class 0
    explain = load_config(DEMO_CONFIG, ["explain.cascade_steps=2"]).explain
    table, steps, _ = sample_checks((tmp_path / "user.keras").read_bytes(),
                                 UserModelSpec(".keras", ModelInput(1, DECLARED_PREPROCESSING["unit"]), None),
                                 SingleLabelTask(("normal", "benign", "malignant")),
                                 {"row_id": np.array([f"r{i}" for i in range(6)]), "pixels": pixels,
                                  "label": np.full(6, -1)}, explain)
    score = sample_figures(table.to_pandas(), steps, ["normal", "benign", "malignant"])
    assert {name: figures["maps"] for name, figures in score["per_class"].items()} == {
        "benign (predicted class)": 4, "normal (predicted class)": 2}
    lines = format_scorecard({"gradcam": {"maps": 6, "images": 6, "empty_maps": 0, "pointing_game": None, **score}})
    assert "benign (predicted class)" in lines and "malignant" not in lines


def test_a_verdict_without_label_permutation_says_it_rests_on_re_initialisation_only():
    # A user's model: medray cannot retrain it on permuted labels, so that check has no figures.
    rows = sample_rows().assign(label_random_rank_corr=np.nan, label_random_ssim=np.nan)
    score = sample_figures(rows, ["head", "conv0"], CLASSES)
    assert score["verdicts"] == {"model_randomisation": "passed", "data_randomisation": None}
    assert score["randomisation_verdict"] == "passed (weights re-initialised only; labels permuted: not run)"
    assert "labels permuted: not run" in score["verdict"] and "and labels permuted" not in score["verdict"]
    rule = score["randomisation_rule"]
    assert "after label permutation" not in rule and "after re-initialisation" in rule
    assert rule.endswith("; label permutation not run")
    both = sample_figures(sample_rows(), ["head", "conv0"], CLASSES)
    assert both["randomisation_verdict"] == "passed" and "after label permutation" in both["randomisation_rule"]
    assert "weights re-initialised and labels permuted" in both["verdict"]


def test_a_pointing_game_with_a_tolerance_says_how_far_it_reaches():
    score = {"maps": 30, "images": 30, "empty_maps": 0, "empty_share": 0.0, "lesion_maps": 30,
             "pointing_game": figure(np.ones(30)), "energy_in_lesion": figure(np.full(30, 0.2)),
             "localisation_chance": figure(np.full(30, 0.01)), "pointing_tolerance_px": 1.5}
    assert "pointing game (within 1.5 px of the lesion) 1.000" in format_scorecard({"gradcam": score})
    assert "pointing game 1.000" in format_scorecard({"gradcam": score | {"pointing_tolerance_px": 0.0}})
