"""Every backbone in the registry builds, trains a step and gives Grad-CAM its layers."""

import numpy as np
import pytest

from medray.config import ModelConfig
from medray.data.preprocess import to_model_input
from medray.explain.cam import CamExplainer
from medray.keras_setup import keras
from medray.models.applications import APPLICATIONS
from medray.models.classifier import build_classifier, initial_model_bytes, load_model_bytes, load_model_file
from medray.models.registry import backbone_names, get_backbone


def tiny_size(name: str) -> int:
    return APPLICATIONS[name].min_input_size if name in APPLICATIONS else 32


@pytest.mark.parametrize("name", backbone_names())
def test_backbone_builds_trains_one_step_and_explains_every_branch(name):
    backbone = get_backbone(name)
    size = tiny_size(name)
    model = build_classifier(backbone, size, 3, ModelConfig(backbone=name, head_units=8))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    pixels = np.random.default_rng(0).integers(0, 255, (2, size, size)).astype(np.uint8)
    images = to_model_input(pixels, backbone)
    before = model.trainable_weights[-1].numpy().copy()
    loss = model.train_on_batch(images, np.eye(3)[[0, 2]])
    assert np.isfinite(loss)
    assert not np.allclose(before, model.trainable_weights[-1].numpy())  # the head learned
    explained = CamExplainer(model, backbone.cam_layers, "gradcam")(images)
    assert set(explained.maps) == {("gradcam", layer) for layer in backbone.cam_layers}
    for maps in explained.maps.values():
        assert maps.shape[:2] == (2, 1) and maps.ndim == 4 and 0 <= maps.min() and maps.max() <= 1
    assert len(backbone.cam_layers) == (2 if name == "ensemble" else 1)


def test_frozen_base_trains_only_the_head_and_top_n_unfreezes_that_many():
    backbone = get_backbone("mobilenet_v2")
    frozen = build_classifier(backbone, 32, 2, ModelConfig(backbone="mobilenet_v2", freeze="all"))
    head = {"head_dense", "probabilities"}
    assert {layer.name for layer in frozen.layers if layer.trainable and layer.weights} == head
    top = build_classifier(backbone, 32, 2, ModelConfig(backbone="mobilenet_v2", freeze=10))
    trainable = [layer for layer in top.layers if layer.trainable and layer.weights]
    assert head < {layer.name for layer in trainable}
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in trainable)


def test_imagenet_weights_come_from_keras_cache_without_network(tmp_path, monkeypatch):
    """A correctly shaped weights file placed where Keras caches downloads is used as is."""
    monkeypatch.setenv("HOME", str(tmp_path))
    cache = tmp_path / ".keras" / "models"
    cache.mkdir(parents=True)
    reference = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(224, 224, 3))
    reference.save_weights(cache / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5")
    config = ModelConfig(backbone="mobilenet_v2", weights="imagenet")
    blob = initial_model_bytes(get_backbone("mobilenet_v2"), 32, 2, config)
    model = load_model_bytes(blob)
    assert np.array_equal(model.get_layer("Conv1").get_weights()[0], reference.get_layer("Conv1").get_weights()[0])


def test_random_init_needs_no_initial_model():
    assert initial_model_bytes(get_backbone("baseline_cnn"), 32, 2, ModelConfig()) is None


def test_model_files_carrying_code_are_refused(tmp_path):
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)
    keras.Model(inputs, outputs).save(str(tmp_path / "lambda.keras"))
    with pytest.raises(ValueError, match="(?i)unsafe|lambda|safe_mode"):
        load_model_file(tmp_path / "lambda.keras")
