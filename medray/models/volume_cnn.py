"""Models of volumes (D, H, W, channels): a small 3-D CNN trained from scratch and a 3-D
ResNet-18-style backbone, both ending in the seeds' head (global pooling -> Dense -> Dropout -> the
task's output). Each names the layer Grad-CAM reads (CAM_LAYER): the last feature volume before
the global pooling, whose grid is the finest the model's decision is made from.
"""

from __future__ import annotations

from medray.keras_setup import keras
from medray.task import Head

CAM_LAYER = "cam_features"
# Residual stages of ResNet-18 (He et al. 2016): two basic blocks each; widths a quarter of the
# 2-D original (64..512): 3-D kernels cost 3x the weights, and volume datasets are small.
RESNET18_WIDTHS = (16, 32, 64, 128)
POOLING_3D = {"max": keras.layers.GlobalMaxPooling3D, "avg": keras.layers.GlobalAveragePooling3D,
              "flatten": keras.layers.Flatten}


def build_cnn3d(input_size: tuple[int, int, int], channels: int, head: Head, model_config) -> keras.Model:
    """model.conv_filters conv blocks (conv 3x3x3 -> [batch norm] -> relu -> max pool 2x2x2).

    Its CAM layer is the activation of the last block but one (of the only block, with one entry):
    twice as fine a grid as the last block's. Lesions a few voxels across fall between the last
    block's cells (one per 4^3 voxels at 32^3): on the 3-D demo's validation volumes, the last
    block's Grad-CAM peaked inside 0 of 13 dark lesions, the block before it inside 12 (bright
    lesions: 23 of 23 either way). The last block still shapes the map through the gradients.
    """
    inputs = keras.Input((*input_size, channels), name="image")
    x = inputs
    filters = model_config.conv_filters
    for block, width in enumerate(filters):
        cam_block = block == max(len(filters) - 2, 0)
        x = keras.layers.Conv3D(width, 3, padding="same", use_bias=not model_config.batch_norm, name=f"conv{block}")(x)
        if model_config.batch_norm:
            x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{block}")(x)
        x = keras.layers.Activation("relu", name=CAM_LAYER if cam_block else f"relu{block}")(x)
        x = keras.layers.MaxPooling3D(name=f"pool{block}")(x)
    return keras.Model(inputs, volume_head(x, head, model_config), name="cnn3d")


def build_resnet18_3d(input_size: tuple[int, int, int], channels: int, head: Head, model_config) -> keras.Model:
    """ResNet-18's layout in 3-D (He et al. 2016, "Deep Residual Learning"; Hara et al. 2018 for 3-D):
    a 3x3x3 stem (no 7x7 stride-2 stem: medical volumes of 28-64 voxels a side have no resolution
    to spare), four stages of two basic blocks, stride 2 at the start of stages 2-4."""
    inputs = keras.Input((*input_size, channels), name="image")
    x = _conv_bn_relu(inputs, RESNET18_WIDTHS[0], 1, "stem")
    for stage, width in enumerate(RESNET18_WIDTHS):
        for block in range(2):
            last = stage == len(RESNET18_WIDTHS) - 1 and block == 1
            x = _basic_block(x, width, 2 if stage and not block else 1, f"stage{stage}_block{block}",
                             CAM_LAYER if last else None)
    return keras.Model(inputs, volume_head(x, head, model_config), name="resnet18_3d")


def _conv_bn_relu(x, width: int, stride: int, name: str):
    x = keras.layers.Conv3D(width, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return keras.layers.Activation("relu", name=f"{name}_relu")(x)


def _basic_block(x, width: int, stride: int, name: str, output_name: str | None):
    shortcut = x
    y = _conv_bn_relu(x, width, stride, f"{name}_1")
    y = keras.layers.Conv3D(width, 3, padding="same", use_bias=False, name=f"{name}_2_conv")(y)
    y = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_2_bn")(y)
    if stride != 1 or shortcut.shape[-1] != width:
        shortcut = keras.layers.Conv3D(width, 1, strides=stride, use_bias=False, name=f"{name}_down")(shortcut)
        shortcut = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_down_bn")(shortcut)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.Activation("relu", name=output_name or f"{name}_out")(y)


def volume_head(features, head: Head, model_config):
    """The seeds' head over a feature volume: 3-D global pooling (or flatten) -> Dense(relu) ->
    Dropout -> the task's output layer."""
    from medray.models.applications import output_layer

    x = POOLING_3D[model_config.pooling](name="pool")(features)
    x = keras.layers.Dense(model_config.head_units, activation="relu", name="head_dense")(x)
    x = keras.layers.Dropout(model_config.dropout, name="head_dropout")(x)
    return output_layer(head)(x)
