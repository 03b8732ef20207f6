"""The task object and the CAM targets: heads, labels, losses and the scores maps differentiate."""

from __future__ import annotations

import numpy as np
import pytest

from medray.config import ModelConfig, validate_config
from medray.errors import MedrayError
from medray.explain.cam import CamExplainer
from medray.explain.targets import BinarySigmoidTarget, SigmoidLabelTarget, SoftmaxClassTarget
from medray.keras_setup import keras
from medray.models.classifier import build_classifier
from medray.models.registry import get_backbone
from medray.task import BinaryTask, MultiLabelTask, SingleLabelTask, make_task

SIDE = 4


def halves_model(activation: str, weights: np.ndarray) -> keras.Model:
    """Two feature channels read as the CAM layer, averaged and sent through one Dense layer whose
    weights say which channel argues for which output; no hidden layer, so the maps are exact."""
    inputs = keras.Input((SIDE, SIDE, 2), name="image")
    features = keras.layers.Activation("relu", name="cam_features")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    dense = keras.layers.Dense(weights.shape[1], activation=activation, name="probabilities")
    model = keras.Model(inputs, dense(pooled))
    dense.set_weights([weights.astype(np.float32), np.zeros(weights.shape[1], np.float32)])
    return model


def left_right_image(strength: float = 1.0) -> np.ndarray:
    """Channel 0 lit on the left half only, channel 1 on the right half only."""
    image = np.zeros((1, SIDE, SIDE, 2), np.float32)
    image[0, :, : SIDE // 2, 0] = strength
    image[0, :, SIDE // 2:, 1] = strength
    return image


LEFT = np.zeros((SIDE, SIDE)); LEFT[:, : SIDE // 2] = 1  # noqa: E702
RIGHT = 1 - LEFT


@pytest.mark.parametrize("strength", [1.0, 200.0])  # 200: both sigmoids saturated at 1.0 in float32
def test_two_label_gradcam_maps_label_0_to_the_left_half_and_label_1_to_the_right_from_one_pass(strength):
    model = halves_model("sigmoid", np.eye(2))
    explainer = CamExplainer(model, "cam_features", "gradcam", target=MultiLabelTask(("left", "right")).cam_target())
    batch = explainer(left_right_image(strength), np.array([[0, 1]]))
    maps = batch.maps[("gradcam", "cam_features")]
    assert maps.shape == (1, 2, SIDE, SIDE)
    np.testing.assert_allclose(maps[0, 0], LEFT, atol=1e-6)
    np.testing.assert_allclose(maps[0, 1], RIGHT, atol=1e-6)
    assert batch.targets.tolist() == [[0, 1]]
    # independent sigmoids: both labels present at once, not a softmax that shares one unit of mass
    assert np.all(batch.probabilities[0] > 0.5) and batch.probabilities.shape == (1, 2)


def test_a_single_sigmoid_unit_explains_class_1_by_its_logit_and_class_0_by_minus_the_logit():
    # channel 0 (left) raises the logit, channel 1 (right) lowers it
    model = halves_model("sigmoid", np.array([[1.0], [-1.0]]))
    explainer = CamExplainer(model, "cam_features", "gradcam", target=BinaryTask(("normal", "pneumonia")).cam_target())
    batch = explainer(left_right_image(), np.array([[1, 0]]))
    maps = batch.maps[("gradcam", "cam_features")]
    np.testing.assert_allclose(maps[0, 0], LEFT, atol=1e-6)
    np.testing.assert_allclose(maps[0, 1], RIGHT, atol=1e-6)
    np.testing.assert_allclose(batch.probabilities.sum(axis=1), 1.0, rtol=1e-6)


def test_a_softmax_class_is_explained_by_its_score_before_softmax():
    model = halves_model("softmax", np.eye(2))
    batch = CamExplainer(model, "cam_features", "gradcam", target=SoftmaxClassTarget())(left_right_image(),
                                                                                        np.array([[0, 1]]))
    maps = batch.maps[("gradcam", "cam_features")]
    np.testing.assert_allclose(maps[0, 0], LEFT, atol=1e-6)
    np.testing.assert_allclose(maps[0, 1], RIGHT, atol=1e-6)


def test_the_target_of_a_model_trained_elsewhere_is_read_from_its_head():
    from medray.explain.graph import CamGraph

    assert isinstance(CamGraph(halves_model("sigmoid", np.eye(2))).target, SigmoidLabelTarget)
    assert isinstance(CamGraph(halves_model("sigmoid", np.ones((2, 1)))).target, BinarySigmoidTarget)
    assert isinstance(CamGraph(halves_model("softmax", np.eye(2))).target, SoftmaxClassTarget)


@pytest.mark.parametrize("task, units, activation", [
    (SingleLabelTask(("a", "b", "c")), 3, "softmax"),
    (BinaryTask(("normal", "pneumonia")), 1, "sigmoid"),
    (MultiLabelTask(("effusion", "nodule", "mass")), 3, "sigmoid"),
])
def test_each_task_builds_its_own_head(task, units, activation):
    model = build_classifier(get_backbone("baseline_cnn"), 16, task.head, ModelConfig(conv_filters=[4]))
    head = model.get_layer("probabilities")
    assert head.units == units and head.get_config()["activation"] == activation


def test_binary_probabilities_are_reported_per_class_and_predictions_follow_p_at_one_half():
    task = BinaryTask(("normal", "pneumonia"))
    probabilities = task.class_probabilities(np.array([[0.2], [0.7]], np.float32))
    np.testing.assert_allclose(probabilities, [[0.8, 0.2], [0.3, 0.7]])
    assert task.predictions(probabilities).tolist() == [0, 1]


def test_multi_label_predictions_use_each_labels_own_threshold():
    task = MultiLabelTask(("effusion", "nodule"))
    probabilities = np.array([[0.3, 0.3], [0.6, 0.1]])
    assert task.predictions(probabilities, np.array([0.25, 0.5])).tolist() == [[1, 0], [1, 0]]
    assert task.predictions(probabilities).tolist() == [[0, 0], [1, 0]]


def test_binary_needs_two_classes():
    with pytest.raises(MedrayError, match="task=binary needs exactly two classes, the data has 3"):
        make_task("binary", ["a", "b", "c"])


def test_auto_follows_the_data_and_a_task_that_contradicts_it_is_refused():
    assert make_task("auto", ["a", "b"]).kind == "single_label"
    assert make_task("auto", ["a", "b"], data_multi_label=True).kind == "multi_label"
    with pytest.raises(MedrayError, match="task=multi_label: the data has one class per image"):
        make_task("multi_label", ["a", "b"])
    with pytest.raises(MedrayError, match="task=single_label: the data has several labels per image"):
        make_task("single_label", ["a", "b"], data_multi_label=True)


def test_multi_label_positive_weights_come_from_the_known_training_entries():
    labels = np.array([[1, 0], [0, 0], [0, -1], [1, 1]])
    balance = MultiLabelTask(("a", "b")).balance(labels, "weights")
    # label a: 2 positives, 2 negatives; label b: 1 positive, 2 negatives (the -1 does not count)
    assert balance["positive_weights"] == [1.0, 2.0]
    assert MultiLabelTask(("a", "b")).balance(labels, "none")["positive_weights"] == [1.0, 1.0]


def test_the_masked_loss_ignores_unknown_entries_and_weights_positives():
    from medray.train.losses import MaskedBinaryCrossentropy

    y_true = np.array([[1, 0, -1], [0, 1, 1]], np.float32)
    y_pred = np.array([[0.9, 0.2, 0.7], [0.4, 0.6, 0.3]], np.float32)
    loss = MaskedBinaryCrossentropy([2.0, 1.0, 1.0])

    def entry(target, probability, weight):
        return -(weight * target * np.log(probability) + (1 - target) * np.log(1 - probability))

    first = (entry(1, 0.9, 2.0) + entry(0, 0.2, 1.0)) / 2  # the -1 entry is left out
    second = (entry(0, 0.4, 2.0) + entry(1, 0.6, 1.0) + entry(1, 0.3, 1.0)) / 3
    assert float(loss(y_true, y_pred)) == pytest.approx((first + second) / 2, rel=1e-5)


def test_oversampling_is_refused_for_multi_label_runs_with_the_reason():
    config = validate_config({"task": "multi_label", "data": {"path": "x"}, "train": {"class_balance": "oversample"}})
    with pytest.raises(MedrayError, match="multi-label runs balance each label by weighting its positives"):
        MultiLabelTask(("a", "b")).check_config(config)
    SingleLabelTask(("a", "b")).check_config(config)  # single-label runs may oversample


def test_oversampling_multi_label_data_found_by_task_auto_is_refused_before_ray(tmp_path):
    from medray.data.synth import write_multilabel_dataset
    from medray.job import prepare_job

    write_multilabel_dataset(tmp_path / "phantoms", train=8, val=4, test=4, size=32, seed=1)
    config = validate_config({"data": {"path": str(tmp_path / "phantoms" / "parquet"), "label_column": "labels"},
                              "train": {"class_balance": "oversample"}})
    with pytest.raises(MedrayError, match="train.class_balance=oversample: oversampling repeats the rows"):
        prepare_job(config)
