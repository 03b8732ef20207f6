"""Losses of `train.loss`, and the losses and metrics of multi-label heads with unknown entries.

Every loss here returns one value per image, (N,), which Keras weights by the per-sample weights
and averages over the batch, so that any of them serves any task head.

- Focal loss (Lin et al. 2017, "Focal Loss for Dense Object Detection"): cross-entropy scaled by
  (1 - p_t)^gamma, so that images the model already gets right with confidence add little.
  Softmax and single-sigmoid heads use Keras's own focal losses; the masked multi-label loss below
  takes gamma and alpha itself.
- Online hard example mining (Shrivastava et al. 2016, "Training Region-based Object Detectors
  with Online Hard Example Mining"): the batch's loss is the mean over its k highest per-image
  losses, the rest contribute nothing to that step's gradient.

Multi-label heads: CheXpert's "uncertain" labels under the U-Ignore policy (Irvin et al. 2019) and
datasets that did not annotate every finding for every image leave entries that are neither
positive nor negative: they must not count as negatives. Shapes: y_true and y_pred (N, K), y_true
in {1, 0, -1}.
"""

from __future__ import annotations

from medray.keras_setup import keras, tf

# Probabilities are clipped away from 0 and 1 before the log, as Keras's own cross-entropy does.
EPSILON = 1e-7


@keras.saving.register_keras_serializable(package="medray")
class MaskedBinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy over the known entries of each label vector, positives of label k
    weighted by `positive_weights[k]`; an image's loss is the mean over its known entries (0 for an
    image with none). `label_smoothing` s moves targets to 1 - s/2 and s/2, as Keras's BCE does.

    With `focal_gamma` > 0 it is the focal loss (Lin et al. 2017): the positive term is scaled by
    (1 - p)^gamma, the negative term by p^gamma; `focal_alpha` a weights the positive term by a and
    the negative by 1 - a (None: both by 1). For hard targets this is Lin's -a_t (1 - p_t)^gamma log p_t.
    """

    def __init__(self, positive_weights: list[float], label_smoothing: float = 0.0, focal_gamma: float = 0.0,
                 focal_alpha: float | None = None, name: str = "masked_binary_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.positive_weights = [float(weight) for weight in positive_weights]
        self.label_smoothing = float(label_smoothing)
        self.focal_gamma = float(focal_gamma)
        self.focal_alpha = None if focal_alpha is None else float(focal_alpha)

    def call(self, y_true, y_pred):
        y_true = tf.cast(y_true, y_pred.dtype)
        known = tf.cast(y_true >= 0, y_pred.dtype)
        targets = tf.clip_by_value(y_true, 0, 1)
        targets = targets * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
        probabilities = tf.clip_by_value(y_pred, EPSILON, 1 - EPSILON)
        weights = tf.constant(self.positive_weights, dtype=y_pred.dtype)
        positive = weights * targets * tf.math.log(probabilities)
        negative = (1 - targets) * tf.math.log(1 - probabilities)
        if self.focal_gamma:
            positive *= tf.pow(1 - probabilities, self.focal_gamma)
            negative *= tf.pow(probabilities, self.focal_gamma)
        if self.focal_alpha is not None:
            positive, negative = self.focal_alpha * positive, (1 - self.focal_alpha) * negative
        entries = -(positive + negative)
        return tf.math.divide_no_nan(tf.reduce_sum(entries * known, axis=-1), tf.reduce_sum(known, axis=-1))

    def get_config(self) -> dict:
        return {**super().get_config(), "positive_weights": self.positive_weights,
                "label_smoothing": self.label_smoothing, "focal_gamma": self.focal_gamma,
                "focal_alpha": self.focal_alpha}


@keras.saving.register_keras_serializable(package="medray")
class HardExampleMining(keras.losses.Loss):
    """Online hard example mining (Shrivastava et al. 2016) over any per-image loss `base`: of each
    batch of N images, the ceil(`fraction` * N) with the highest `base` loss (at least one) carry the
    batch's loss, their mean; the others get weight 0 and no gradient in that step.

    The ranking uses the unweighted losses; the per-sample weights (class weights) then apply to the
    chosen images, so a rare class is not mined more often, only weighted as it would be anyway.
    Under several workers each worker mines its own share of the global batch, as each GPU of the
    paper's detector did. Returns (N,): the chosen images' losses scaled by N / k, zero elsewhere,
    which Keras's mean over the batch turns into the mean over the k chosen.
    """

    def __init__(self, base: keras.losses.Loss, fraction: float, name: str = "hard_example_mining", **kwargs):
        super().__init__(name=name, **kwargs)
        if isinstance(base, dict):  # from get_config, when a saved model is loaded with its compile config
            base = keras.losses.deserialize(base)
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction={fraction} must lie in (0, 1]")
        self.base = base
        self.fraction = float(fraction)

    def call(self, y_true, y_pred):
        losses = self.base.call(y_true, y_pred)
        count = tf.shape(losses)[0]
        k = tf.maximum(1, tf.cast(tf.math.ceil(self.fraction * tf.cast(count, tf.float32)), tf.int32))
        # The k-th largest loss is the threshold; ties with it are broken by top_k's order, so
        # exactly k images are chosen.
        _, hardest = tf.math.top_k(tf.stop_gradient(losses), k=k)
        chosen = tf.scatter_nd(hardest[:, tf.newaxis], tf.ones([k], losses.dtype), [count])
        return losses * chosen * tf.cast(count, losses.dtype) / tf.cast(k, losses.dtype)

    def get_config(self) -> dict:
        return {**super().get_config(), "base": keras.losses.serialize(self.base), "fraction": self.fraction}


@keras.saving.register_keras_serializable(package="medray")
class MaskedBinaryAccuracy(keras.metrics.Mean):
    """Share of known label entries predicted right at 0.5 (a mean over entries, not images)."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = tf.cast(y_true, tf.float32)
        matches = tf.cast(tf.equal(y_true, tf.cast(y_pred >= 0.5, tf.float32)), tf.float32)
        return super().update_state(matches, sample_weight=tf.cast(y_true >= 0, tf.float32))


@keras.saving.register_keras_serializable(package="medray")
class MaskedAUC(keras.metrics.AUC):
    """ROC AUC per label over its known entries, averaged over labels (multi_label=True)."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        known = tf.cast(y_true >= 0, tf.float32)
        return super().update_state(tf.clip_by_value(y_true, 0, 1), y_pred, sample_weight=known)
