"""Backbones by name: each entry knows how to build it, its input, its preprocessing and the
layer Grad-CAM reads, so no caller ever guesses a layer from its name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from medray.errors import MedrayError
from medray.models.preprocessing import ModelInput, keep_pixels, standardise_per_image


@dataclass(frozen=True)
class Backbone:
    name: str
    # (input_size, channels, head (medray.task.Head), model config) -> a compiled-ready keras.Model
    build: Callable
    # the square image's side, or a volume model's (D, H, W)
    input_size: int | tuple[int, int, int]
    # all Ray Data's preprocessing tasks are sent: it imports no TensorFlow, unlike `build`
    model_input: ModelInput
    # the layers class activation maps are computed from: one per branch (ensembles have two)
    cam_layers: tuple[str, ...]


def _registry() -> dict[str, Backbone]:
    # Imported here: building the registry imports TensorFlow, which the CLI's config checks do not need.
    from functools import partial

    from medray.models import applications, baseline_cnn, volume_cnn

    registry = {
        "baseline_cnn": Backbone("baseline_cnn", baseline_cnn.build, input_size=64,
                                 model_input=ModelInput(1, standardise_per_image),
                                 cam_layers=(baseline_cnn.CAM_LAYER,)),
        "ensemble": Backbone("ensemble", applications.build_ensemble, input_size=224,
                             model_input=ModelInput(3, keep_pixels),
                             cam_layers=tuple(applications.APPLICATIONS[name].cam_layer
                                              for name in applications.ENSEMBLE_BRANCHES)),
    }
    volume_input = ModelInput(1, standardise_per_image, spatial_dims=3)
    registry["cnn3d"] = Backbone("cnn3d", volume_cnn.build_cnn3d, input_size=(32, 32, 32),
                                 model_input=volume_input, cam_layers=(volume_cnn.CAM_LAYER,))
    registry["resnet18_3d"] = Backbone("resnet18_3d", volume_cnn.build_resnet18_3d, input_size=(32, 32, 32),
                                       model_input=volume_input, cam_layers=(volume_cnn.CAM_LAYER,))
    for name, application in applications.APPLICATIONS.items():
        registry[name] = Backbone(name, partial(applications.build_application, name), application.input_size,
                                  model_input=ModelInput(3, application.preprocess), cam_layers=(application.cam_layer,))
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
