"""Decoded pixels -> model input, the same function at training, evaluation and Grad-CAM time."""

from __future__ import annotations

import numpy as np

from medray.models.registry import Backbone


def to_model_input(pixels: np.ndarray, backbone: Backbone) -> np.ndarray:
    """(N, H, W) grayscale in [0, 255] -> (N, H, W, channels) float32 as the backbone expects."""
    images = np.asarray(pixels, dtype=np.float32)[..., np.newaxis]
    if backbone.channels != 1:
        images = np.repeat(images, backbone.channels, axis=-1)
    return backbone.preprocess(images).astype(np.float32, copy=False)
