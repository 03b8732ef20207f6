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


def scale_to_unit(pixels: np.ndarray) -> np.ndarray:
    return pixels / np.float32(255.0)


def _registry() -> dict[str, Backbone]:
    from medray.models import baseline_cnn

    return {
        "baseline_cnn": Backbone(
            name="baseline_cnn",
            build=baseline_cnn.build,
            input_size=64,
            channels=1,
            preprocess=scale_to_unit,
            cam_layers=(baseline_cnn.CAM_LAYER,),
        ),
    }


def backbone_names() -> list[str]:
    return sorted(_registry())


def get_backbone(name: str) -> Backbone:
    registry = _registry()
    if name not in registry:
        raise MedrayError(
            f"model.backbone={name!r} is not a known backbone; choose one of {', '.join(sorted(registry))}"
        )
    return registry[name]
