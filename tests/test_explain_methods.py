"""Every CAM method on one mechanism: right shapes, [0, 1] values, one map per target and branch,
and Grad-CAM equal to the Keras example's one-image-at-a-time recipe."""

import numpy as np
import pytest

from medray.config import ModelConfig
from medray.errors import MedrayError
from medray.explain.cam import CamExplainer
from medray.explain.methods import CAM_METHODS
from medray.keras_setup import keras, tf
from medray.models.classifier import build_classifier
from medray.models.registry import get_backbone

LAYER = get_backbone("baseline_cnn").cam_layers[0]


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return build_classifier(get_backbone("baseline_cnn"), 32, 3, ModelConfig())


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((6, 32, 32, 1)).astype(np.float32)


@pytest.mark.parametrize("method", sorted(CAM_METHODS))
def test_each_method_gives_one_map_per_image_on_the_layer_grid_in_unit_range(model, images, method):
    explained = CamExplainer(model, LAYER, method, score_batch=64)(images)
    maps = explained.maps[(method, LAYER)]
    # 32 px after two 2x poolings; one target per image. Integrated Gradients: the input's own grid.
    assert maps.shape == ((6, 1, 32, 32) if method == "integrated_gradients" else (6, 1, 8, 8))
    assert maps.min() >= 0 and maps.max() <= 1
    peaks = maps.reshape(6, -1).max(axis=1)
    assert np.allclose(peaks[peaks > 0], 1)  # each non-empty map is scaled to its own maximum
    assert np.array_equal(explained.targets[:, 0], explained.probabilities.argmax(axis=1))


def test_all_methods_in_one_call_match_each_method_alone(model, images):
    together = CamExplainer(model, LAYER, sorted(CAM_METHODS), score_batch=64)(images)
    for method in CAM_METHODS:
        alone = CamExplainer(model, LAYER, method, score_batch=64)(images)
        assert np.allclose(together.maps[(method, LAYER)], alone.maps[(method, LAYER)], atol=1e-4)


def test_methods_differ_from_one_another(model, images):
    explained = CamExplainer(model, LAYER, sorted(CAM_METHODS), score_batch=64)(images)
    maps = [explained.maps[(method, LAYER)] for method in sorted(CAM_METHODS)]
    for index, first in enumerate(maps):
        for second in maps[index + 1:]:
            assert first.shape != second.shape or not np.allclose(first, second, atol=1e-3)


def test_every_class_target_gives_one_map_per_class(model, images):
    all_classes = np.tile(np.arange(3), (len(images), 1))
    explained = CamExplainer(model, LAYER, ["gradcam", "scorecam"], score_batch=64)(images, all_classes)
    assert explained.maps[("gradcam", LAYER)].shape == (6, 3, 8, 8)
    assert np.array_equal(explained.targets, all_classes)
    predicted = explained.probabilities.argmax(axis=1)
    for method in ("gradcam", "scorecam"):
        alone = CamExplainer(model, LAYER, method, score_batch=64)(images)
        per_class = explained.maps[(method, LAYER)]
        assert np.allclose(per_class[np.arange(6), predicted], alone.maps[(method, LAYER)][:, 0], atol=1e-4)


def test_grad_cam_equals_the_keras_example_computed_one_image_at_a_time(model, images):
    """The keras-io recipe (grad model, GradientTape, pooled gradients) on the pre-softmax score."""
    explained = CamExplainer(model, LAYER, "gradcam")(images)
    head = model.layers[-1]
    grad_model = keras.Model(model.inputs, [model.get_layer(LAYER).output, head.input])
    for index in range(len(images)):
        with tf.GradientTape() as tape:
            activations, pooled = grad_model(images[index:index + 1])
            logits = tf.matmul(pooled, head.kernel) + head.bias
            score = logits[:, int(tf.argmax(logits[0]))]
        pooled_grads = tf.reduce_mean(tape.gradient(score, activations), axis=(0, 1, 2))
        heatmap = tf.nn.relu(activations[0] @ pooled_grads[..., tf.newaxis])[..., 0].numpy()
        expected = heatmap / heatmap.max() if heatmap.max() > 0 else heatmap
        assert np.allclose(explained.maps[("gradcam", LAYER)][index, 0], expected, atol=1e-4)


def two_branch_model() -> keras.Model:
    """An ensemble as the registry would describe it: two branches, a CAM layer each."""
    inputs = keras.Input((32, 32, 1))
    pooled = []
    for branch, filters in (("a", 8), ("b", 4)):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"{branch}_conv")(inputs)
        # branch b is read after pooling: its maps have half the resolution
        if branch == "b":
            x = keras.layers.MaxPooling2D(name="b_cam")(x)
        else:
            x = keras.layers.Activation("linear", name="a_cam")(x)
        pooled.append(keras.layers.GlobalMaxPooling2D()(x))
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Concatenate()(pooled))
    return keras.Model(inputs, outputs)


def test_an_ensemble_gets_one_map_per_branch_at_each_branch_resolution(images):
    explainer = CamExplainer(two_branch_model(), ("a_cam", "b_cam"), ["gradcam", "hirescam"])
    explained = explainer(images)
    assert explained.maps[("gradcam", "a_cam")].shape == (6, 1, 32, 32)
    assert explained.maps[("gradcam", "b_cam")].shape == (6, 1, 16, 16)
    assert set(explained.maps) == {(m, layer) for m in ("gradcam", "hirescam") for layer in ("a_cam", "b_cam")}


def test_a_layer_the_model_does_not_have_is_refused_by_name(model):
    with pytest.raises(MedrayError, match="no layer 'conv9'"):
        CamExplainer(model, "conv9", "gradcam")


def test_an_unknown_method_is_refused_with_the_choices(model):
    with pytest.raises(MedrayError, match="gradcam, gradcam\\+\\+, hirescam, scorecam"):
        CamExplainer(model, LAYER, "eigencam")


def test_the_registry_ensemble_gets_a_map_for_each_of_its_branches():
    backbone = get_backbone("ensemble")
    model = build_classifier(backbone, 64, 3, ModelConfig(backbone="ensemble", weights="none"))
    images = np.random.default_rng(2).random((2, 64, 64, 3)).astype(np.float32) * 255
    explained = CamExplainer(model, backbone.cam_layers, "gradcam")(images)
    assert len(backbone.cam_layers) == 2
    for layer in backbone.cam_layers:  # MobileNetV2 and DenseNet169 both reduce 64 px to a 2 x 2 grid
        maps = explained.maps[("gradcam", layer)]
        assert maps.shape == (2, 1, 2, 2) and maps.min() >= 0 and maps.max() <= 1


def test_integrated_gradients_of_a_linear_score_is_the_input_times_the_weights():
    """Sundararajan et al.'s completeness made exact: for a score linear in the input, every point
    of the path has the same gradient w, so the attribution is x * w (here ReLU-ed and scaled)."""
    inputs = keras.Input((6, 6, 1))
    features = keras.layers.Conv2D(1, 1, use_bias=False, name="features")(inputs)
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(features))
    model = keras.Model(inputs, outputs)
    model.get_layer("features").set_weights([np.ones((1, 1, 1, 1), np.float32)])
    weights = np.random.default_rng(4).normal(size=(36, 2)).astype(np.float32)
    model.layers[-1].set_weights([weights, np.zeros(2, np.float32)])
    images = np.random.default_rng(5).random((3, 6, 6, 1)).astype(np.float32)
    maps = CamExplainer(model, "features", "integrated_gradients")(images, np.ones(3, np.int32)).maps
    attribution = np.maximum(images[..., 0] * weights[:, 1].reshape(6, 6), 0)
    expected = attribution / attribution.reshape(3, -1).max(axis=1)[:, np.newaxis, np.newaxis]
    assert np.allclose(maps[("integrated_gradients", "features")][:, 0], expected, atol=1e-5)
