"""The base of every Ray Data actor that runs the trained model: built once per actor from the
bytes of its `.keras` file, so actors on any node of a cluster can load it."""

from __future__ import annotations

import numpy as np

from medray.models.classifier import load_model_bytes
from medray.models.preprocessing import to_model_input
from medray.models.registry import get_backbone


class ModelActor:
    def __init__(self, model_bytes: bytes, backbone_name: str):
        self.backbone = get_backbone(backbone_name)
        self.model = load_model_bytes(model_bytes)

    def model_input(self, pixels: np.ndarray) -> np.ndarray:
        return to_model_input(pixels, self.backbone.model_input)
