"""What each backbone does to pixels before the model sees them, in numpy alone.

Ray Data's tasks run these on every batch, so nothing here (nor in what those tasks are sent) may
import TensorFlow: a fresh Ray worker that imports it spends seconds of CPU and some hundreds of MB
doing so, and on a small machine it takes them from the training process. The keras.applications
functions would import it; these reproduce their numpy arithmetic (tests compare the two).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# Caffe-trained ResNet weights expect BGR channels with these means (in BGR order) subtracted.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


@dataclass(frozen=True)
class ModelInput:
    """The channels a backbone reads, how its pixels are scaled and its spatial axes (2: H, W;
    3: D, H, W, a volume)."""
    channels: int
    # float32 pixels in [0, 255], shape (N, *spatial, channels) -> the model's input
    preprocess: Callable[[np.ndarray], np.ndarray]
    spatial_dims: int = 2


def to_model_input(pixels: np.ndarray, model_input: ModelInput) -> np.ndarray:
    """(N, H, W) gray or (N, H, W, 3) RGB in [0, 255] -> (N, H, W, channels) float32 as the backbone
    expects; the same function at training, evaluation and Grad-CAM time. Gray is repeated into a
    3-channel backbone; RGB goes in as it is (the model was built with 3 input channels, see
    `input_channels`)."""
    images = np.asarray(pixels, dtype=np.float32)
    if images.ndim == model_input.spatial_dims + 1:  # no channel axis: gray
        images = images[..., np.newaxis]
        if model_input.channels != 1:
            images = np.repeat(images, model_input.channels, axis=-1)
    return model_input.preprocess(images).astype(np.float32, copy=False)


def input_channels(model_input: ModelInput, color: str) -> int:
    """Channels of the model's input: RGB data needs 3 even where the backbone reads gray (baseline_cnn)."""
    return 3 if color == "rgb" else model_input.channels


def standardise_per_image(pixels: np.ndarray) -> np.ndarray:
    """Zero mean and unit variance per image: X-rays and MRI differ in exposure and gain from
    scanner to scanner, and a model trained from scratch should not learn the scanner's brightness."""
    per_image = tuple(range(1, pixels.ndim))  # (H, W, C) or a volume's (D, H, W, C)
    mean = pixels.mean(axis=per_image, keepdims=True)
    std = pixels.std(axis=per_image, keepdims=True)
    return (pixels - mean) / np.maximum(std, np.float32(1.0))


def keep_pixels(pixels: np.ndarray) -> np.ndarray:
    """For models that scale their input themselves (EfficientNet, the ensemble)."""
    return pixels


def scale_to_unit(pixels: np.ndarray) -> np.ndarray:
    """[0, 255] -> [0, 1]: the `rescale=1/255` of most notebooks' ImageDataGenerator."""
    return pixels / np.float32(255.0)


def scale_to_symmetric_unit(pixels: np.ndarray) -> np.ndarray:
    """[0, 255] -> [-1, 1]: MobileNetV2, InceptionV3, Xception ("tf" mode in keras.applications)."""
    return pixels / np.float32(127.5) - np.float32(1.0)


def normalise_imagenet(pixels: np.ndarray) -> np.ndarray:
    """[0, 1], then ImageNet's channel means and deviations: DenseNet ("torch" mode)."""
    mean, std = np.asarray(IMAGENET_MEAN, np.float32), np.asarray(IMAGENET_STD, np.float32)
    return (pixels / np.float32(255.0) - mean) / std


def subtract_caffe_mean(pixels: np.ndarray) -> np.ndarray:
    """RGB -> BGR, then the Caffe means subtracted: ResNet50 ("caffe" mode)."""
    return pixels[..., ::-1] - np.asarray(CAFFE_BGR_MEAN, np.float32)


# explain.preprocess for a model trained elsewhere; a registry backbone's name means its own function.
DECLARED_PREPROCESSING = {"none": keep_pixels, "unit": scale_to_unit, "symmetric": scale_to_symmetric_unit,
                          "imagenet": normalise_imagenet}
