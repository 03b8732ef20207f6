"""medray: medical-image classification, tuning and Grad-CAM as one distributed batch job on Ray."""

import os

# Must be set before TensorFlow is first imported in any process (driver and Ray workers import
# medray first): Keras 3's model.fit fails under MultiWorkerMirroredStrategy, tf-keras works.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ INFO lines drown the per-epoch progress lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
