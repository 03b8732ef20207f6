"""How sure is the model, and does the map move if the image is nudged? Test-time augmentation.

Each sampled image is explained again under small changes a scan could have had (a horizontal
flip, shifts by a few pixels in four directions); each pass's map is moved back onto the
original image, so the passes can be compared pixel by pixel. Per image:
- the predictive entropy of the explained class's mean probability across passes (in bits: 0 for
  a probability of 0 or 1 in every pass, 1 for 0.5), which also rises when the passes disagree;
- the map's spread: the per-pixel standard deviation across passes, averaged over the image
  (maps are in [0, 1]; 0 when every pass gives the same map).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medray.explain.cam import CamBatch, CamExplainer, explain_in_batches
from medray.explain.checks import upsample_maps


def augmentations(size: tuple[int, int]) -> list[tuple[str, dict]]:
    """(name, spec): the identity, a horizontal flip and shifts by 1/32 of the side (at least 1 px)."""
    step = max(1, round(min(size) / 32))
    shifts = [(step, 0), (-step, 0), (0, step), (0, -step)]
    return [("identity", {}), ("flip", {"flip": True}), *((f"shift {dy},{dx}", {"shift": (dy, dx)})
                                                          for dy, dx in shifts)]


def _apply(images: np.ndarray, spec: dict, inverse: bool = False) -> np.ndarray:
    """images: (N, H, W[, C]); a flip is its own inverse, a shift is undone by the opposite shift."""
    if spec.get("flip"):
        return images[:, :, ::-1]
    if "shift" in spec:
        dy, dx = spec["shift"]
        sign = -1 if inverse else 1
        offsets = (0, sign * dy, sign * dx) + (0,) * (images.ndim - 3)
        return ndimage.shift(images, offsets, order=0, mode="nearest")
    return images


def tta_uncertainty(explainer: CamExplainer, images: np.ndarray, targets: np.ndarray, batch_size: int,
                    identity: CamBatch | None = None) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """{(method, layer): {"entropy": (N,), "map_spread": (N,), "spread_map": (N, H, W)}} for the
    (N,) target classes, each pass `batch_size` images at a time. `identity`: the maps the
    explainer already made of these images and targets (maps (N, 1, h, w), probabilities (N, K)),
    which then stand for the un-augmented pass instead of computing it again."""
    size = images.shape[1:-1]  # (H, W), or a volume's (D, H, W)
    maps: dict[tuple[str, str], list[np.ndarray]] = {}
    probabilities = []
    for name, spec in augmentations(size):
        if name == "identity" and identity is not None:
            explained = identity
        else:
            explained = explain_in_batches(explainer, _apply(images, spec), targets[:, np.newaxis], batch_size)
        probabilities.append(explained.probabilities[np.arange(len(images)), targets])
        for key, key_maps in explained.maps.items():
            maps.setdefault(key, []).append(_apply(upsample_maps(key_maps[:, 0], size), spec, inverse=True))
    mean = np.clip(np.mean(probabilities, axis=0), 1e-12, 1 - 1e-12)
    entropy = -(mean * np.log2(mean) + (1 - mean) * np.log2(1 - mean))
    result = {}
    for key, passes in maps.items():
        spread_map = np.std(np.stack(passes), axis=0)
        result[key] = {"entropy": entropy, "map_spread": spread_map.reshape(len(images), -1).mean(axis=1),
                       "spread_map": spread_map}
    return result
