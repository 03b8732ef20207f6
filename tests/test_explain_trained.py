"""Do the maps mean something? On phantoms, with a small CNN trained to tell the lesion classes
apart (48 px, 240 images, 10 epochs of plain model.fit, once for this module).

Measured on this machine (90 test phantoms, 36 with a lesion; the lesion covers 1.1 % of an
image, which is the chance level of both localisation checks): Grad-CAM's pointing game 0.69,
energy in the lesion 0.18; deletion AUC 0.30 against 0.39 for random order, insertion AUC 0.64
against 0.38 (on the 36 lesion images 0.21 / 0.39 and 0.82 / 0.39). Sanity checks (median
Spearman / SSIM with the trained model's map): Grad-CAM 0.36 / 0.09 after every block is
re-initialised and -0.07 / -0.01 for the label-permuted model, against 0.66 / 0.44 for two
different images' maps of one class; HiResCAM 0.06 / 0.19 and 0.03 / 0.18 against 0.21 / 0.38.
"""

import tempfile
from pathlib import Path

import numpy as np
import pytest

from medray.config import ModelConfig, load_config
from medray.data.phantoms import CLASS_NAMES, make_phantoms
from medray.explain import checks, road, verdicts
from medray.explain.cam import CamExplainer
from medray.explain.sample_checks import sample_checks
from medray.explain.sanity import randomised_copy, sanity_verdict
from medray.explain.scorecard import figure, sample_figures
from medray.keras_setup import keras
from medray.models.classifier import build_classifier
from medray.models.preprocessing import to_model_input
from medray.models.registry import get_backbone
from medray.task import SingleLabelTask

from conftest import DEMO_CONFIG

SIZE = 48
BACKBONE = get_backbone("baseline_cnn")
LAYER = BACKBONE.cam_layers[0]


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    images, _, labels = make_phantoms(240, SIZE, seed=1)
    model = build_classifier(BACKBONE, SIZE, 3, ModelConfig(pooling="max", dropout=0.1))
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy")
    model.fit(to_model_input(images, BACKBONE.model_input), labels, epochs=10, batch_size=16, verbose=0)
    return model


@pytest.fixture(scope="module")
def test_set():
    images, masks, labels = make_phantoms(90, SIZE, seed=2)
    return to_model_input(images, BACKBONE.model_input), masks, labels


@pytest.fixture(scope="module")
def gradcam(trained, test_set):
    explainer = CamExplainer(trained, LAYER, "gradcam")
    explained = explainer(test_set[0])
    return explainer, explained.maps[("gradcam", LAYER)][:, 0], explained


def test_the_model_separates_the_lesion_classes(trained, test_set):
    images, _, labels = test_set
    accuracy = (trained.predict(images, verbose=0).argmax(axis=1) == labels).mean()
    assert accuracy > 0.75  # majority class: 0.60


def test_grad_cam_points_at_the_lesion_far_above_chance(gradcam, test_set):
    _, maps, _ = gradcam
    masks = test_set[1]
    upsampled = checks.upsample_maps(maps, (SIZE, SIZE))
    pointing = np.nanmean(checks.pointing_game(upsampled, masks))
    energy = np.nanmean(checks.energy_in_lesion(upsampled, masks))
    chance = np.nanmean(checks.lesion_share(masks))
    assert chance < 0.05
    assert pointing > 0.4 and pointing > 10 * chance  # measured 0.69 against 0.011
    assert energy > 5 * chance  # measured 0.18


def test_deleting_pixels_in_grad_cam_order_hurts_the_prediction_more_than_random_order(gradcam, test_set):
    explainer, maps, explained = gradcam
    images, masks = test_set[0], test_set[1]
    upsampled = checks.upsample_maps(maps, (SIZE, SIZE))
    targets = explained.targets[:, 0]
    deletion, insertion = checks.deletion_insertion_auc(images, upsampled, targets, explainer.probabilities, 16)
    random_deletion, random_insertion = checks.deletion_insertion_auc(
        images, upsampled, targets, explainer.probabilities, 16, order="random")
    assert deletion.mean() < random_deletion.mean()  # measured 0.30 against 0.39
    assert insertion.mean() > random_insertion.mean() + 0.1  # measured 0.64 against 0.38
    # Where the evidence is one lesion, the map's order finds it: measured 0.21 / 0.39 and 0.82 / 0.39.
    lesion = masks.reshape(len(masks), -1).any(axis=1)
    assert deletion[lesion].mean() < random_deletion[lesion].mean() - 0.1
    assert insertion[lesion].mean() > random_insertion[lesion].mean() + 0.2


def run_sample_checks(model, images, labels, overrides=()):
    """The sample checks of the bulk job on these images, summarised per method as the scorecard does."""
    config = load_config(DEMO_CONFIG, ["data.path=unused", "explain.batch_size=16", *overrides]).explain
    pixels = np.round(images[..., 0] * 255).astype(np.uint8)  # back to what decoding yields
    rows = {"row_id": np.array([f"phantom-{i}" for i in range(len(labels))]), "pixels": pixels, "label": labels}
    with tempfile.TemporaryDirectory() as tmp:
        model.save(f"{tmp}/model.keras")
        model_bytes = Path(f"{tmp}/model.keras").read_bytes()
    table, steps, cost = sample_checks(model_bytes, "baseline_cnn", SingleLabelTask(tuple(CLASS_NAMES)), rows, config)
    assert set(cost) == {*config.methods, "shared"} and all(s >= 0 for c in cost.values() for s in c.values())
    frame = table.to_pandas()
    return {method: sample_figures(frame[frame["method"] == method], steps, list(CLASS_NAMES))
            for method in config.methods}


@pytest.fixture(scope="module")
def sanity_scores(trained, test_set):
    """The sample checks of the bulk job on all 90 test phantoms."""
    images, _, labels = test_set
    return run_sample_checks(trained, images, labels, ["explain.method=[gradcam,hirescam]"])


@pytest.mark.parametrize("method", ["gradcam", "hirescam"])
def test_maps_of_weight_and_label_randomised_models_differ_clearly_and_the_verdict_says_passed(sanity_scores,
                                                                                               method):
    score = sanity_scores[method]
    reference = score["shared_structure_reference"]
    for test in ("model_randomisation", "data_randomisation"):
        for measure in ("rank_corr", "ssim"):
            # clearly: the whole 95 % interval of the median lies below what two different images' maps share
            assert score[test][measure]["ci"][1] < reference[measure]["value"], (test, measure, score[test], reference)
        assert score["verdicts"][test] == "passed"
    assert score["randomisation_verdict"] == "passed"
    assert score["map_spread"]["n"] == 90 and 0 <= score["map_spread"]["value"] < 0.5  # test-time augmentation
    assert "passes randomisation (weights re-initialised and labels permuted)" in score["verdict"]
    # the cascade starts at the head and its last step has re-initialised every block
    steps = score["cascade"]["steps"]
    assert steps[:2] == ["probabilities", "head_dense"] and steps[-1] == "conv0..bn0"
    assert score["cascade"]["rank_corr"][-1] == score["model_randomisation"]["rank_corr"]["value"]


def test_a_map_that_ignores_the_model_fails_the_verdict(sanity_scores):
    reference = sanity_scores["gradcam"]["shared_structure_reference"]
    unchanged = {measure: {"value": 1.0, "ci": [1.0, 1.0], "n": 90} for measure in ("rank_corr", "ssim")}
    verdict = sanity_verdict({"model_randomisation": unchanged, "data_randomisation": unchanged}, reference)
    assert verdict["verdicts"] == {"model_randomisation": "FAILED", "data_randomisation": "FAILED"}
    assert verdict["verdict"].startswith("FAILED")


def test_randomised_copy_has_the_architecture_but_not_the_weights(trained):
    copy = randomised_copy(trained)
    assert [layer.name for layer in copy.layers] == [layer.name for layer in trained.layers]
    kernels = [(a, b) for a, b in zip(trained.get_weights(), copy.get_weights()) if a.ndim == 4]
    assert kernels and all(a.shape == b.shape and not np.allclose(a, b) for a, b in kernels)


def road_of(explainer, images, maps, targets):
    return road.road_score(*road.road_curves(images, maps, targets, explainer.probabilities))


def test_road_judges_grad_cam_faithful_on_the_bright_lesion_and_inverted_or_random_maps_no_better(gradcam, test_set):
    """On the bright-lesion phantoms; the verdict rests on the interval of the paired difference
    with random order, so a map about as good as random values cannot pass by chance."""
    explainer, maps, explained = gradcam
    images, _, labels = test_set
    bright = labels == CLASS_NAMES.index("bright_round_lesion")
    images, targets = images[bright], explained.targets[bright, 0]
    upsampled = checks.upsample_maps(maps[bright], (SIZE, SIZE))
    rng = np.random.default_rng(5)
    random_order = road_of(explainer, images, rng.random(upsampled.shape), targets)
    judged = {}
    for name, candidate in (("gradcam", upsampled), ("inverted", 1 - upsampled),
                            ("random", rng.random(upsampled.shape))):
        difference = figure(road_of(explainer, images, candidate, targets) - random_order)
        judged[name] = verdicts.class_verdict(False, float(np.median(road.concentration(candidate))), difference)
    assert judged["gradcam"] == verdicts.FAITHFUL
    # the inverted map's energy is spread (it is bright everywhere but the lesion): judged either way, not faithful
    assert judged["inverted"] in (verdicts.NO_BETTER, verdicts.SPREAD)
    assert verdicts.road_verdict(figure(road_of(explainer, images, 1 - upsampled, targets) - random_order)) \
        == verdicts.NO_BETTER
    assert judged["random"] in (verdicts.NO_BETTER, verdicts.SPREAD)
    assert verdicts.road_verdict(figure(road_of(explainer, images, rng.random(upsampled.shape), targets)
                                        - random_order)) == verdicts.NO_BETTER


def test_the_scorecard_verdicts_agree_with_the_road_figures_beside_them(sanity_scores):
    for score in sanity_scores.values():
        for name, figures in score["per_class"].items():
            difference = figures["road_difference"]
            if figures["verdict"] == verdicts.FAITHFUL:
                assert difference["ci"][0] > 0, name
            if difference["value"] < 0:
                assert figures["verdict"] != verdicts.FAITHFUL, name
    summary = {(method, name): (figures["verdict"], figures["concentration"], figures["road_difference"]["value"])
               for method, score in sanity_scores.items() for name, figures in score["per_class"].items()}
    assert summary[("gradcam", "bright_round_lesion")][0] == verdicts.FAITHFUL, summary


def test_a_weight_randomised_model_fails_randomisation(trained, test_set):
    """A model that learnt nothing (the trained one re-initialised): its maps are what
    re-initialisation and label permutation give, so the checks must not call them specific to
    what it learnt."""
    images, _, labels = test_set
    score = run_sample_checks(randomised_copy(trained), images[:40], labels[:40],
                              ["explain.method=gradcam", "explain.cascade_steps=2"])["gradcam"]
    assert score["randomisation_verdict"].startswith("FAILED")
    assert score["verdict"].startswith(verdicts.FAILS)
    assert {figures["verdict"] for figures in score["per_class"].values()} == {verdicts.FAILS}
