"""Class activation maps, computed for a whole batch in one compiled TensorFlow function.

All the mechanics live here: activations and gradients of the backbone's CAM layer, a weighted
sum over channels, ReLU, normalisation to [0, 1]. A method is only the function that turns
(activations, gradients) into per-channel weights (pytorch-grad-cam's design).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from medray.keras_setup import keras, tf


def gradcam_weights(activations: tf.Tensor, gradients: tf.Tensor) -> tf.Tensor:
    """Grad-CAM (Selvaraju et al. 2017): the gradients averaged over the spatial grid."""
    return tf.reduce_mean(gradients, axis=(1, 2))


CAM_METHODS: dict[str, Callable[[tf.Tensor, tf.Tensor], tf.Tensor]] = {"gradcam": gradcam_weights}


class CamExplainer:
    """Maps for the classifier's `cam_layer`, differentiating the class score before softmax.

    Gradients of the softmax output vanish as confidence nears 1, which gives the empty maps the
    seed notebooks saw; the pre-softmax score (logit) does not saturate.
    """

    def __init__(self, model: keras.Model, cam_layer: str, method: str):
        head = model.layers[-1]
        if not isinstance(head, keras.layers.Dense):
            raise ValueError(f"{model.name}: the last layer must be the Dense softmax head, not {head.name}")
        self._head = head
        self._features = keras.Model(model.inputs, [model.get_layer(cam_layer).output, head.input])
        self._weights = CAM_METHODS[method]
        self._compiled = tf.function(self._maps, reduce_retracing=True)

    def __call__(self, images: np.ndarray, targets: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(maps (N, h, w) in [0, 1] at the layer's resolution, class probabilities (N, K)).

        `targets` are the classes to explain; None explains each image's predicted class.
        """
        target_tensor = tf.constant(-1 if targets is None else targets, dtype=tf.int32,
                                    shape=(len(images),))
        maps, probabilities = self._compiled(tf.convert_to_tensor(images), target_tensor)
        return maps.numpy(), probabilities.numpy()

    def _maps(self, images: tf.Tensor, targets: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            activations, pooled = self._features(images, training=False)
            logits = tf.matmul(pooled, self._head.kernel) + self._head.bias
            predicted = tf.argmax(logits, axis=1, output_type=tf.int32)
            chosen = tf.where(targets >= 0, targets, predicted)
            scores = tf.gather(logits, chosen, batch_dims=1)
        gradients = tape.gradient(scores, activations)
        weights = self._weights(activations, gradients)
        maps = tf.nn.relu(tf.einsum("bhwc,bc->bhw", activations, weights))
        peaks = tf.reduce_max(maps, axis=(1, 2), keepdims=True)
        return tf.math.divide_no_nan(maps, peaks), tf.nn.softmax(logits)
