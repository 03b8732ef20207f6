"""Every backbone in the registry builds, trains a step and gives Grad-CAM its layers."""

import numpy as np
import pytest

from medray.config import ModelConfig
from medray.explain.cam import CamExplainer
from medray.keras_setup import keras
from medray.models.applications import APPLICATIONS
from medray.models.classifier import build_classifier, initial_model_bytes, load_model_bytes, load_model_file
from medray.models.preprocessing import to_model_input
from medray.models.registry import backbone_names, get_backbone
from medray.data.volumes import spatial_shape


def tiny_size(name: str) -> int | tuple[int, int, int]:
    if get_backbone(name).model_input.spatial_dims == 3:
        return (16, 16, 16)
    return APPLICATIONS[name].min_input_size if name in APPLICATIONS else 32


@pytest.mark.parametrize("name", backbone_names())
def test_backbone_builds_trains_one_step_and_explains_every_branch(name):
    backbone = get_backbone(name)
    size = tiny_size(name)
    model = build_classifier(backbone, size, 3, ModelConfig(backbone=name, head_units=8))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    pixels = np.random.default_rng(0).integers(0, 255, (2, *spatial_shape(size))).astype(np.uint8)
    images = to_model_input(pixels, backbone.model_input)
    before = model.trainable_weights[-1].numpy().copy()
    loss = model.train_on_batch(images, np.eye(3)[[0, 2]])
    assert np.isfinite(loss)
    assert not np.allclose(before, model.trainable_weights[-1].numpy())  # the head learned
    explained = CamExplainer(model, backbone.cam_layers, "gradcam")(images)
    assert set(explained.maps) == {("gradcam", layer) for layer in backbone.cam_layers}
    for maps in explained.maps.values():
        assert maps.shape[:2] == (2, 1) and maps.ndim == 2 + backbone.model_input.spatial_dims
        assert 0 <= maps.min() and maps.max() <= 1
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


def test_baseline_cnn_blocks_batch_norm_and_flatten_head_follow_the_config():
    config = ModelConfig(conv_filters=[8, 16], batch_norm=False, pooling="flatten", head_units=4)
    model = build_classifier(get_backbone("baseline_cnn"), 28, 2, config)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [conv.filters for conv in convs] == [8, 16]
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    # 28 -> 14 -> 7 after two pooled blocks; flatten keeps every position of the 7 x 7 x 16 grid
    assert model.get_layer("pool").output.shape[-1] == 7 * 7 * 16
    assert model.get_layer("cam_features").output.shape[1:] == (14, 14, 16)


@pytest.mark.parametrize("name", sorted(APPLICATIONS))
def test_numpy_preprocessing_matches_keras_applications(name):
    keras_module = {"mobilenet_v2": "mobilenet_v2", "densenet169": "densenet", "inception_v3": "inception_v3",
                    "xception": "xception", "resnet50": "resnet50", "efficientnet_b0": "efficientnet"}[name]
    pixels = np.random.default_rng(2).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    expected = getattr(keras.applications, keras_module).preprocess_input(pixels.copy())
    assert np.allclose(APPLICATIONS[name].preprocess(pixels), expected, atol=1e-4)


def test_per_image_standardisation_removes_exposure_differences():
    backbone = get_backbone("baseline_cnn")
    scan = np.random.default_rng(1).integers(20, 120, (1, 16, 16)).astype(np.float32)
    brighter = to_model_input(scan * 2 + 10, backbone.model_input)
    assert np.allclose(to_model_input(scan, backbone.model_input), brighter, atol=1e-5)
    flat = to_model_input(np.full((1, 16, 16), 77.0), backbone.model_input)
    assert np.isfinite(flat).all() and np.allclose(flat, 0)
