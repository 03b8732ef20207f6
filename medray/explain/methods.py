"""CAM methods: each one only turns the mechanism's evidence into weights for the activations.

The mechanism (`medray.explain.cam`) computes the CAM layer's activations A (N, h, w, C), or
(N, d, h, w, C) for a volume, and either
the gradients of the class score with respect to A, or, for Score-CAM, the class score of the
input masked by each channel (N, C). A method returns weights that broadcast against A; the map
is ReLU(sum over channels of A * weights) for every CAM method.

Integrated Gradients (Sundararajan et al. 2017, "Axiomatic Attribution for Deep Networks", ICML)
reads no layer: its evidence is the input's own attribution, (x - x') times the class score's
gradient averaged along the straight path from a baseline x' (the all-zero model input) to x,
summed over colour channels; its map is the positive part at the input's resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

from medray.explain.spatial import spatial_axes
from medray.keras_setup import tf


@dataclass(frozen=True)
class CamMethod:
    name: str
    weights: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
    # "gradients": (A, dScore/dA); "masked_scores": (A, score of input * upsampled A_c), forward only;
    # "integrated_gradients": (A, the (N, H, W) input attribution), whose map is the attribution itself
    evidence: Literal["gradients", "masked_scores", "integrated_gradients"] = "gradients"


def cam_weights_gradcam(activations: tf.Tensor, gradients: tf.Tensor) -> tf.Tensor:
    """Grad-CAM (Selvaraju et al. 2017): the gradients averaged over the spatial grid."""
    return tf.reduce_mean(gradients, axis=spatial_axes(gradients), keepdims=True)


def cam_weights_gradcam_plus_plus(activations: tf.Tensor, gradients: tf.Tensor) -> tf.Tensor:
    """Grad-CAM++ (Chattopadhay et al. 2018): positive gradients weighted per location by alpha,
    which lets several instances of a class each count, not only the strongest."""
    squared = tf.square(gradients)
    cubed = squared * gradients
    activation_sums = tf.reduce_sum(activations, axis=spatial_axes(activations), keepdims=True)
    alpha = tf.math.divide_no_nan(squared, 2 * squared + activation_sums * cubed)
    return tf.reduce_sum(alpha * tf.nn.relu(gradients), axis=spatial_axes(gradients), keepdims=True)


def cam_weights_hirescam(activations: tf.Tensor, gradients: tf.Tensor) -> tf.Tensor:
    """HiResCAM (Draelos & Carin 2020): the gradients themselves, location by location, so the map
    is exactly what the score depends on (no spatial averaging)."""
    return gradients


# Masked scores that differ across channels by less than this share of their size carry no
# evidence (a saturated output scores every masked input the same).
NO_EVIDENCE = 1e-6


def cam_weights_scorecam(activations: tf.Tensor, masked_scores: tf.Tensor) -> tf.Tensor:
    """Score-CAM (Wang et al. 2020): how much the class score keeps when the input is masked by
    each channel, softmax over channels; forward passes only. Where no channel changes the score,
    the softmax would weigh all channels equally and draw the mean activation, the same map for
    every class: the weights are zero instead, so the map is empty and flagged, as a Grad-CAM map
    is when the score's gradient vanishes."""
    spread = tf.reduce_max(masked_scores, axis=-1, keepdims=True) - tf.reduce_min(masked_scores, axis=-1, keepdims=True)
    size = tf.maximum(1.0, tf.reduce_max(tf.abs(masked_scores), axis=-1, keepdims=True))
    evidence = tf.cast(spread > NO_EVIDENCE * size, masked_scores.dtype)
    weights = tf.nn.softmax(masked_scores, axis=-1) * evidence  # (N, C)
    grid = (1,) * len(spatial_axes(activations))
    return tf.reshape(weights, tf.concat([tf.shape(weights)[:1], grid, tf.shape(weights)[1:]], axis=0))


def input_attribution(activations: tf.Tensor, attribution: tf.Tensor) -> tf.Tensor:
    """Integrated Gradients: the map is the input attribution, not a weighting of the activations."""
    return attribution


CAM_METHODS: dict[str, CamMethod] = {
    "gradcam": CamMethod("gradcam", cam_weights_gradcam),
    "gradcam++": CamMethod("gradcam++", cam_weights_gradcam_plus_plus),
    "hirescam": CamMethod("hirescam", cam_weights_hirescam),
    "scorecam": CamMethod("scorecam", cam_weights_scorecam, evidence="masked_scores"),
    "integrated_gradients": CamMethod("integrated_gradients", input_attribution, evidence="integrated_gradients"),
}
