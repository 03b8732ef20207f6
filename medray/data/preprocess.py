"""Decoded pixels -> model input, the same function at training, evaluation and Grad-CAM time."""

from __future__ import annotations

import numpy as np

from medray.models.preprocessing import ModelInput


def to_model_input(pixels: np.ndarray, model_input: ModelInput) -> np.ndarray:
    """(N, H, W) grayscale in [0, 255] -> (N, H, W, channels) float32 as the backbone expects."""
    images = np.asarray(pixels, dtype=np.float32)[..., np.newaxis]
    if model_input.channels != 1:
        images = np.repeat(images, model_input.channels, axis=-1)
    return model_input.preprocess(images).astype(np.float32, copy=False)
