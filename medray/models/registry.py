"""Backbones by name: each entry knows how to build it, its input, its preprocessing and the
layer Grad-CAM reads, so no caller ever guesses a layer from its name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from medray.errors import MedrayError


@dataclass(frozen=True)
class Backbone:
    name: str
    # (input_size, channels, num_classes, model config) -> a compiled-ready keras.Model
    build: Callable
    input_size: int
    channels: int
    # float32 pixels in [0, 255], shape (N, H, W, channels) -> the model's input
    preprocess: Callable[[np.ndarray], np.ndarray]
    # the layers class activation maps are computed from: one per branch (ensembles have two)
    cam_layers: tuple[str, ...]


def standardise_per_image(pixels: np.ndarray) -> np.ndarray:
    """Zero mean and unit variance per image: X-rays and MRI differ in exposure and gain from
    scanner to scanner, and a model trained from scratch should not learn the scanner's brightness."""
    mean = pixels.mean(axis=(1, 2, 3), keepdims=True)
    std = pixels.std(axis=(1, 2, 3), keepdims=True)
    return (pixels - mean) / np.maximum(std, np.float32(1.0))


def keep_pixels(pixels: np.ndarray) -> np.ndarray:
    return pixels


def _registry() -> dict[str, Backbone]:
    # Imported here: building the registry imports TensorFlow, which the CLI's config checks do not need.
    from functools import partial

    from medray.models import applications, baseline_cnn

    registry = {
        "baseline_cnn": Backbone("baseline_cnn", baseline_cnn.build, input_size=64, channels=1,
                                 preprocess=standardise_per_image, cam_layers=(baseline_cnn.CAM_LAYER,)),
        "ensemble": Backbone("ensemble", applications.build_ensemble, input_size=224, channels=3,
                             preprocess=keep_pixels,
                             cam_layers=tuple(applications.APPLICATIONS[name].cam_layer
                                              for name in applications.ENSEMBLE_BRANCHES)),
    }
    for name, application in applications.APPLICATIONS.items():
        registry[name] = Backbone(name, partial(applications.build_application, name), application.input_size,
                                  channels=3, preprocess=application.preprocess, cam_layers=(application.cam_layer,))
    return registry


def backbone_names() -> list[str]:
    return sorted(_registry())


def get_backbone(name: str) -> Backbone:
    registry = _registry()
    if name not in registry:
        raise MedrayError(
            f"model.backbone={name!r} is not a known backbone; choose one of {', '.join(sorted(registry))}"
        )
    return registry[name]
