"""The seed projects' small CNN trained from scratch: conv blocks with batch norm, then a
pooled softmax head."""

from medray.keras_setup import keras

CAM_LAYER = "cam_features"
FILTERS = (32, 64, 128)


def build(input_size: int, channels: int, num_classes: int, model_config) -> keras.Model:
    inputs = keras.Input((input_size, input_size, channels), name="image")
    x = inputs
    for block, filters in enumerate(FILTERS):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{block}")(x)
        # momentum 0.9: the moving statistics settle within the few hundred steps of a small dataset
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{block}")(x)
        last = block == len(FILTERS) - 1
        # The last block's activations keep their spatial grid: Grad-CAM reads them.
        x = keras.layers.Activation("relu", name=CAM_LAYER if last else f"relu{block}")(x)
        if not last:
            x = keras.layers.MaxPooling2D(name=f"pool{block}")(x)
    pool = keras.layers.GlobalMaxPooling2D if model_config.pooling == "max" else keras.layers.GlobalAveragePooling2D
    x = pool(name="pool")(x)
    x = keras.layers.Dropout(model_config.dropout, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="baseline_cnn")
