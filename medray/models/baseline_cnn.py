"""The seed projects' small CNN trained from scratch: conv blocks (optionally batch-normalised),
each followed by max pooling, then the seeds' head (pooling or flatten -> Dense -> Dropout -> the task's output)."""

from medray.keras_setup import keras
from medray.models.applications import classification_head
from medray.task import Head

CAM_LAYER = "cam_features"


def build(input_size: int, channels: int, head: Head, model_config) -> keras.Model:
    inputs = keras.Input((input_size, input_size, channels), name="image")
    x = inputs
    filters = model_config.conv_filters
    for block, width in enumerate(filters):
        last = block == len(filters) - 1
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=not model_config.batch_norm,
                                name=f"conv{block}")(x)
        if model_config.batch_norm:
            # momentum 0.9: the moving statistics settle within the few hundred steps of a small dataset
            x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{block}")(x)
        # The last block's activations, before their pooling, keep the finest grid Grad-CAM can read.
        x = keras.layers.Activation("relu", name=CAM_LAYER if last else f"relu{block}")(x)
        x = keras.layers.MaxPooling2D(name=f"pool{block}")(x)
    outputs = classification_head(x, head, model_config)
    return keras.Model(inputs, outputs, name="baseline_cnn")
