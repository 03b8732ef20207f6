"""The CAM layer from the graph: nested backbones, Sequential models, names that do not exist,
and medray's own registry entries found by the same rule."""

import numpy as np
import pytest

from medray.config import ModelConfig
from medray.errors import MedrayError
from medray.explain.cam import CamExplainer
from medray.explain.graph import CamGraph, find_cam_layer, trace
from medray.keras_setup import keras
from medray.models.applications import APPLICATIONS, build_application
from medray.task import Head
from medray.models.user_model import load_user_model

# The smallest side at which each backbone's last feature map is still larger than 1 x 1.
SIZES = {"mobilenet_v2": 64, "densenet169": 64, "resnet50": 64, "efficientnet_b0": 64,
         "inception_v3": 139, "xception": 71}


def test_the_rule_finds_every_registry_backbones_cam_layer():
    for name, application in APPLICATIONS.items():
        model = build_application(name, SIZES[name], 3, Head(2, "softmax"), ModelConfig(backbone=name, weights="none"))
        assert find_cam_layer(trace(model), name) == application.cam_layer, name


def small_backbone(name="backbone"):
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv_a")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Activation("relu", name="features")(x)
    return keras.Model(inputs, x, name=name)


def nested_and_flattened():
    """The transfer-learning recipe (backbone as one layer) and the same weights in one flat graph."""
    keras.utils.set_random_seed(1)
    backbone = small_backbone()
    inputs = keras.Input((16, 16, 1))
    x = backbone(inputs, training=False)
    outputs = keras.layers.Dense(3, activation="softmax", name="head")(keras.layers.GlobalAveragePooling2D()(x))
    nested = keras.Model(inputs, outputs)
    flat_inputs = keras.Input((16, 16, 1))
    x = flat_inputs
    for layer in backbone.layers[1:]:
        x = type(layer).from_config(layer.get_config())(x)
    flat_outputs = keras.layers.Dense(3, activation="softmax", name="head")(keras.layers.GlobalAveragePooling2D()(x))
    flat = keras.Model(flat_inputs, flat_outputs)
    for layer in flat.layers:
        source = backbone.get_layer(layer.name) if layer.name in {"conv_a", "bn", "features"} else None
        if layer.weights:
            layer.set_weights((source or nested.get_layer(layer.name)).get_weights())
    return nested, flat


def test_a_nested_backbone_gives_the_maps_of_the_same_weights_flattened():
    nested, flat = nested_and_flattened()
    images = np.random.default_rng(0).random((4, 16, 16, 1)).astype(np.float32)
    nested_explainer, flat_explainer = CamExplainer(nested, None, ["gradcam", "hirescam"]), CamExplainer(flat)
    assert nested_explainer.layers == ("backbone/features",) and flat_explainer.layers == ("features",)
    nested_maps = nested_explainer(images).maps[("gradcam", "backbone/features")]
    flat_maps = flat_explainer(images).maps[("gradcam", "features")]
    assert nested_maps.max() == pytest.approx(1.0)
    assert np.allclose(nested_maps, flat_maps, atol=1e-5)


@pytest.mark.parametrize("container", ["functional", "sequential"])
def test_a_keras_applications_backbone_nested_as_one_layer_is_found_inside(container):
    base = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(64, 64, 3))
    head = [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, activation="softmax")]
    if container == "sequential":
        model = keras.Sequential([keras.Input((64, 64, 3)), base, *head])
    else:
        inputs = keras.Input((64, 64, 3))
        model = keras.Model(inputs, head[1](head[0](base(inputs, training=False))))
    explained = CamExplainer(model)(np.random.default_rng(0).random((2, 64, 64, 3)).astype(np.float32))
    assert list(explained.maps) == [("gradcam", f"{base.name}/out_relu")]
    assert explained.maps[("gradcam", f"{base.name}/out_relu")].shape == (2, 1, 2, 2)


def test_an_unknown_layer_name_lists_the_nested_candidates():
    nested, _ = nested_and_flattened()
    with pytest.raises(MedrayError, match=r"no layer 'features'.*last first: backbone/features, backbone/bn, "
                                          r"backbone/conv_a"):
        CamGraph(nested, "features")
    assert CamGraph(nested, "backbone/bn").layers == ("backbone/bn",)


def test_a_sequential_built_by_fit_without_an_input_layer_is_explained_after_saving(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
                              keras.layers.MaxPooling2D(name="pool"),
                              keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    images = np.random.default_rng(0).random((8, 16, 16, 1)).astype(np.float32)
    model.fit(images, np.arange(8) % 2, epochs=1, verbose=0)
    model.save(tmp_path / "fitted.h5")
    explained = CamExplainer(load_user_model(tmp_path / "fitted.h5"))(images[:2])
    assert list(explained.maps) == [("gradcam", "pool")] and explained.maps[("gradcam", "pool")].shape == (2, 1, 7, 7)


def test_a_keras3_model_with_a_nested_backbone_is_explained():
    import keras as keras3

    inner_inputs = keras3.Input((16, 16, 1))
    backbone = keras3.Model(inner_inputs, keras3.layers.Conv2D(4, 3, activation="relu", name="features")(inner_inputs),
                            name="backbone")
    inputs = keras3.Input((16, 16, 1))
    pooled = keras3.layers.GlobalMaxPooling2D()(backbone(inputs))
    model = keras3.Model(inputs, keras3.layers.Dense(2, activation="softmax")(pooled))
    images = np.random.default_rng(0).random((3, 16, 16, 1)).astype(np.float32)
    explained = CamExplainer(model)(images)
    assert explained.maps[("gradcam", "backbone/features")].shape == (3, 1, 14, 14)
    assert np.allclose(explained.probabilities, model.predict(images, verbose=0), atol=1e-6)
