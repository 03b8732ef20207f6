"""Transfer-learning backbones from keras.applications, and the stacked ensemble of the
pneumonia seed project. Every builder returns a classifier ending in the Dense layer
`probabilities` of the task's head (softmax, or sigmoid units), as Grad-CAM expects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from medray.keras_setup import keras
from medray.task import Head
from medray.models.preprocessing import (IMAGENET_MEAN, IMAGENET_STD, keep_pixels, normalise_imagenet,
                                         scale_to_symmetric_unit, subtract_caffe_mean)

applications = keras.applications


@dataclass(frozen=True)
class Application:
    constructor: Callable
    # numpy, as keras.applications' own preprocess_input for this network (see preprocessing.py)
    preprocess: Callable
    cam_layer: str
    input_size: int
    # keras.applications refuse smaller inputs
    min_input_size: int = 32


APPLICATIONS = {
    "mobilenet_v2": Application(applications.MobileNetV2, scale_to_symmetric_unit, "out_relu", 224),
    "densenet169": Application(applications.DenseNet169, normalise_imagenet, "relu", 224),
    "inception_v3": Application(applications.InceptionV3, scale_to_symmetric_unit, "mixed10",
                                299, min_input_size=75),
    "xception": Application(applications.Xception, scale_to_symmetric_unit,
                            "block14_sepconv2_act", 299, min_input_size=71),
    "resnet50": Application(applications.ResNet50, subtract_caffe_mean, "conv5_block3_out", 224),
    "efficientnet_b0": Application(applications.EfficientNetB0, keep_pixels,
                                   "top_activation", 224),
}

# The ensemble feeds raw [0, 255] pixels to both branches; each branch normalises them itself
# with plain layers (no Lambda, so the model still loads in safe mode).
ENSEMBLE_BRANCHES = ("mobilenet_v2", "densenet169")


def build_application(name: str, input_size: int, channels: int, head: Head, model_config) -> keras.Model:
    inputs = keras.Input((input_size, input_size, channels), name="image")
    base = APPLICATIONS[name].constructor(include_top=False, weights=keras_weights(model_config.weights),
                                          input_tensor=inputs)
    set_trainable_top(base, model_config.freeze)
    outputs = classification_head(base.output, head, model_config)
    return keras.Model(inputs, outputs, name=name)


def build_ensemble(input_size: int, channels: int, head: Head, model_config) -> keras.Model:
    inputs = keras.Input((input_size, input_size, channels), name="image")
    to_unit = keras.layers.Rescaling(1 / 127.5, offset=-1, name="mobilenet_v2_scaling")(inputs)
    mobilenet = applications.MobileNetV2(include_top=False, weights=keras_weights(model_config.weights),
                                         input_tensor=to_unit)
    scaled = keras.layers.Rescaling(1 / 255, name="densenet169_scaling")(inputs)
    normalised = keras.layers.Normalization(mean=IMAGENET_MEAN, variance=[s * s for s in IMAGENET_STD],
                                            name="densenet169_normalisation")(scaled)
    densenet = applications.DenseNet169(include_top=False, weights=keras_weights(model_config.weights),
                                        input_tensor=normalised)
    for branch in (mobilenet, densenet):
        set_trainable_top(branch, "all")  # the seed's ensemble trains only its stacked head
    pool = pooling_layer(model_config.pooling)
    x = keras.layers.Concatenate(name="stacked_features")([pool(name=f"{branch.name}_pool")(branch.output)
                                                           for branch in (mobilenet, densenet)])
    for units, block in ((256, 1), (128, 2)):
        x = keras.layers.BatchNormalization(name=f"stack_bn{block}")(x)
        x = keras.layers.Dense(units, activation="relu", name=f"stack_dense{block}")(x)
        x = keras.layers.Dropout(model_config.dropout, name=f"stack_dropout{block}")(x)
    return keras.Model(inputs, output_layer(head)(x), name="ensemble")


def classification_head(features, head: Head, model_config):
    """The seeds' head: global pooling (or flatten) -> Dense(units, relu) -> Dropout -> the task's
    output layer (K softmax units, one sigmoid unit, or K sigmoid units)."""
    x = pooling_layer(model_config.pooling)(name="pool")(features)
    x = keras.layers.Dense(model_config.head_units, activation="relu", name="head_dense")(x)
    x = keras.layers.Dropout(model_config.dropout, name="head_dropout")(x)
    return output_layer(head)(x)


def output_layer(head: Head):
    return keras.layers.Dense(head.units, activation=head.activation, name="probabilities")


def pooling_layer(pooling: str):
    return {"max": keras.layers.GlobalMaxPooling2D, "avg": keras.layers.GlobalAveragePooling2D,
            "flatten": keras.layers.Flatten}[pooling]


def set_trainable_top(base: keras.Model, freeze) -> None:
    """freeze: "all" (base frozen), "none" (all trainable) or N (only the top N layers train).

    Batch norm layers of a pretrained base stay frozen, in inference mode, even when trainable
    layers surround them: updating their statistics on small medical batches wrecks the features.
    """
    layers = base.layers
    if freeze == "all":
        trainable_from = len(layers)
    elif freeze == "none":
        trainable_from = 0
    else:
        trainable_from = max(0, len(layers) - int(freeze))
    for index, layer in enumerate(layers):
        is_batch_norm = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = index >= trainable_from and not (is_batch_norm and freeze != "none")


def keras_weights(weights: str) -> str | None:
    return None if weights == "none" else weights
