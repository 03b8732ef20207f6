"""The one place medray imports TensorFlow and Keras, so every module gets the same Keras.

medray trains with tf-keras (Keras 2) because Keras 3's `model.fit` fails under
MultiWorkerMirroredStrategy (keras-team/keras#20585, ray-project/ray#47464). `medray/__init__`
sets TF_USE_LEGACY_KERAS before this import so that `tf.keras` is tf-keras too.
"""

import medray  # noqa: F401  (sets the TensorFlow environment first)

import tensorflow as tf
import tf_keras as keras

tf.get_logger().setLevel("ERROR")

__all__ = ["keras", "tf"]
