"""The base of every Ray Data actor that runs a model: built once per actor from the bytes of its
file, so actors on any node of a cluster can load it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medray.models.classifier import load_model_bytes
from medray.models.preprocessing import ModelInput, to_model_input
from medray.models.registry import get_backbone


@dataclass(frozen=True)
class UserModelSpec:
    """A model trained elsewhere: how to load its file and feed it (see medray.models.user_model)."""
    file_suffix: str  # ".keras" or ".h5": picks the loader
    model_input: ModelInput
    cam_layers: tuple[str, ...] | None  # None: found from the graph
    trust_code: bool = False


class ModelActor:
    """`backbone_name`: a registry backbone (medray's own `.keras` file) or a UserModelSpec."""

    def __init__(self, model_bytes: bytes, backbone_name: str | UserModelSpec):
        if isinstance(backbone_name, UserModelSpec):
            from medray.models.user_model import load_user_model_bytes

            self.model = load_user_model_bytes(model_bytes, backbone_name.file_suffix, backbone_name.trust_code)
            self.input, self.cam_layers = backbone_name.model_input, backbone_name.cam_layers
            self.trained_by_medray = False
        else:
            backbone = get_backbone(backbone_name)
            self.model = load_model_bytes(model_bytes)
            self.input, self.cam_layers = backbone.model_input, backbone.cam_layers
            self.trained_by_medray = True

    def cam_target(self, task):
        """What maps differentiate: the task's target for medray's own model; for a model trained
        elsewhere None, read from its head (medray.explain.targets.target_for_head)."""
        return task.cam_target() if self.trained_by_medray else None

    def model_input(self, pixels: np.ndarray) -> np.ndarray:
        return to_model_input(pixels, self.input)
