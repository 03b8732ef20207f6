"""Losses and metrics for multi-label heads whose label vectors may hold unknown entries (-1).

CheXpert's "uncertain" labels under the U-Ignore policy (Irvin et al. 2019) and datasets that
did not annotate every finding for every image leave entries that are neither positive nor
negative: they must not count as negatives. Shapes: y_true and y_pred (N, K), y_true in {1, 0, -1}.
"""

from __future__ import annotations

from medray.keras_setup import keras, tf

# Probabilities are clipped away from 0 and 1 before the log, as Keras's own cross-entropy does.
EPSILON = 1e-7


@keras.saving.register_keras_serializable(package="medray")
class MaskedBinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy over the known entries of each label vector, positives of label k
    weighted by `positive_weights[k]`; an image's loss is the mean over its known entries (0 for an
    image with none). `label_smoothing` s moves targets to 1 - s/2 and s/2, as Keras's BCE does."""

    def __init__(self, positive_weights: list[float], label_smoothing: float = 0.0,
                 name: str = "masked_binary_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.positive_weights = [float(weight) for weight in positive_weights]
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        y_true = tf.cast(y_true, y_pred.dtype)
        known = tf.cast(y_true >= 0, y_pred.dtype)
        targets = tf.clip_by_value(y_true, 0, 1)
        targets = targets * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
        probabilities = tf.clip_by_value(y_pred, EPSILON, 1 - EPSILON)
        weights = tf.constant(self.positive_weights, dtype=y_pred.dtype)
        entries = -(weights * targets * tf.math.log(probabilities)
                    + (1 - targets) * tf.math.log(1 - probabilities))
        return tf.math.divide_no_nan(tf.reduce_sum(entries * known, axis=-1), tf.reduce_sum(known, axis=-1))

    def get_config(self) -> dict:
        return {**super().get_config(), "positive_weights": self.positive_weights,
                "label_smoothing": self.label_smoothing}


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
