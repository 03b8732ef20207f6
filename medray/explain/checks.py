"""Does a map mean something? Per-image checks of CAM maps, apart from the methods that make them.

- localisation against a ground-truth lesion mask: the pointing game (the map's maximum lies in
  the lesion) and the share of the map's energy inside the lesion;
- faithfulness: deletion and insertion curves (Petsiuk et al. 2018), the target class's
  probability as pixels are replaced by a blurred copy, or revealed from it, in the map's order
  (a faithful map: low deletion AUC, high insertion AUC; random order is the reference);
- similarity of two maps of an image (Spearman's rank correlation), which the sanity checks of
  `medray.explain.sanity` (Adebayo et al. 2018) use.

Every function takes a batch and returns one value per image; NaN where a check does not apply
(no lesion, an empty map).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage, stats

from medray.explain.spatial import resize_grid
from medray.keras_setup import tf

# The baseline pixels are removed to, or revealed from: the image blurred with sigma = side / 4,
# which keeps the overall brightness but no lesion-sized detail.
BLUR_FRACTION = 4
# Images sent through the model in one call of the faithfulness curves.
PREDICT_BATCH = 256


def upsample_maps(maps: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """(N, h, w) maps at feature resolution -> (N, H, W), bilinear, as the overlays show them;
    a volume's (N, d, h, w) -> (N, D, H, W), trilinear."""
    return resize_grid(tf.convert_to_tensor(np.asarray(maps, np.float32)[..., np.newaxis]),
                       tuple(size)).numpy()[..., 0]


def pointing_game(maps: np.ndarray, masks: np.ndarray, tolerance_px: float = 0.0) -> np.ndarray:
    """The pointing game (Zhang et al. 2016, "Top-down neural attention by excitation backprop"):
    1.0 where the (upsampled) map's maximum falls in the lesion, 0.0 where it does not, NaN where
    the image has no lesion or the map is empty.

    maps, masks: (N, H, W) at the same resolution. `tolerance_px`: a hit also counts when the
    maximum lies closer than this many pixels to the lesion (Euclidean); 0 is the strict game.
    Zhang et al. and TorchRay's benchmark use 15 px on PASCAL VOC / COCO images of about 500 px,
    where a mask's outline is a few pixels uncertain; the chance level rises with the tolerance.
    """
    flat_maps, flat_masks = maps.reshape(len(maps), -1), masks.reshape(len(masks), -1) > 0
    peaks = flat_maps.argmax(axis=1)
    if tolerance_px > 0:
        # distance of every pixel to the nearest lesion pixel (an image without a lesion is NaN below)
        distance = np.stack([ndimage.distance_transform_edt(~mask) if mask.any() else np.full(mask.shape, np.inf)
                             for mask in masks > 0])
        hits = (distance.reshape(len(maps), -1)[np.arange(len(maps)), peaks] < tolerance_px).astype(np.float64)
    else:
        hits = flat_masks[np.arange(len(maps)), peaks].astype(np.float64)
    return np.where(_applies(flat_maps, flat_masks), hits, np.nan)


def energy_in_lesion(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """The share of the map's total value inside the lesion (chance: the lesion's area share)."""
    flat_maps, flat_masks = maps.reshape(len(maps), -1), masks.reshape(len(masks), -1) > 0
    inside = (flat_maps * flat_masks).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(_applies(flat_maps, flat_masks), inside / flat_maps.sum(axis=1), np.nan)


def lesion_share(masks: np.ndarray) -> np.ndarray:
    """The lesion's share of the image: the chance level of both localisation checks."""
    flat = masks.reshape(len(masks), -1) > 0
    return np.where(flat.any(axis=1), flat.mean(axis=1), np.nan)


def _applies(flat_maps: np.ndarray, flat_masks: np.ndarray) -> np.ndarray:
    return flat_masks.any(axis=1) & (flat_maps.max(axis=1) > 0)


@dataclass(frozen=True)
class FaithfulnessBaseline:
    """What every deletion and insertion curve of a set of images shares, computed once for all
    of its maps (methods, layers, targets, orders): the blurred images the curves move to or
    from, and the model's probabilities at the curves' two ends."""
    blurred: np.ndarray  # (N, H, W, C) model input, blurred with sigma = side / BLUR_FRACTION
    original_probabilities: np.ndarray  # (N, K) of the images as they are
    blurred_probabilities: np.ndarray  # (N, K) of the blurred images


def faithfulness_baseline(images: np.ndarray, predict: Callable[[np.ndarray], np.ndarray]) -> FaithfulnessBaseline:
    """images: (N, H, W, C) model input, or volumes (N, D, H, W, C); predict: images -> (n, K) probabilities."""
    sides = images.shape[1:-1]
    blurred = ndimage.gaussian_filter(images, sigma=(0, *(side / BLUR_FRACTION for side in sides), 0))
    return FaithfulnessBaseline(blurred, _predict_all(images, predict), _predict_all(blurred, predict))


def deletion_insertion_auc(images: np.ndarray, maps: np.ndarray, targets: np.ndarray,
                           predict: Callable[[np.ndarray], np.ndarray], steps: int,
                           order: str = "map", seed: int = 0,
                           baseline: FaithfulnessBaseline | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(deletion AUC, insertion AUC) per image, both in [0, 1] (Petsiuk et al. 2018, "RISE").

    images: (N, H, W, C) model input; maps: (N, H, W) upsampled; targets: (N,) classes;
    predict: images -> (n, K) probabilities; steps: points of each curve after the first.
    order="map" removes the highest-valued pixels first; order="random" is the reference.
    `baseline`: `faithfulness_baseline(images, predict)`, to share between calls on the same images.
    Each image costs 2 x (steps - 1) forward passes (the curves' ends come from the baseline),
    sent through `predict` a few images at a time so that memory stays at about PREDICT_BATCH images.
    """
    count, grid = len(maps), maps.shape[1:]  # (H, W), or a volume's (D, H, W)
    pixels = int(np.prod(grid))
    baseline = baseline if baseline is not None else faithfulness_baseline(images, predict)
    # Ties (a map's flat zero regions) are broken at random, not in reading order.
    tie_break = np.random.default_rng(seed).random((count, pixels))
    keys = (tie_break, -maps.reshape(count, -1)) if order == "map" else (tie_break,)
    # argsort of the sort order: each pixel's rank, 0 for the first removed
    ranks = np.argsort(np.lexsort(keys, axis=-1), axis=1)
    inner = np.rint(np.linspace(0, pixels, steps + 1)).astype(np.int64)[1:-1]  # pixels changed per inner step
    rows = np.arange(count)
    original = baseline.original_probabilities[rows, targets]
    blurred = baseline.blurred_probabilities[rows, targets]
    # (N, 2, steps + 1): the deletion curve runs from the image to its blurred copy, insertion back
    curves = np.empty((count, 2, steps + 1))
    curves[:, 0, 0], curves[:, 0, -1], curves[:, 1, 0], curves[:, 1, -1] = original, blurred, blurred, original
    chunk = max(1, PREDICT_BATCH // (2 * max(len(inner), 1)))  # images per forward call
    for start in range(0, count if len(inner) else 0, chunk):
        part = slice(start, start + chunk)
        size = len(rows[part])
        changed = (ranks[part, np.newaxis, :] < inner[np.newaxis, :, np.newaxis]).reshape(
            size, len(inner), *grid, 1)
        image, blur = images[part, np.newaxis], baseline.blurred[part, np.newaxis]
        stack = np.concatenate([np.where(changed, blur, image), np.where(changed, image, blur)], axis=1)
        probabilities = predict(stack.reshape(-1, *images.shape[1:])).reshape(size, 2, len(inner), -1)
        chosen = np.broadcast_to(targets[part, np.newaxis, np.newaxis, np.newaxis], (size, 2, len(inner), 1))
        curves[part, :, 1:-1] = np.take_along_axis(probabilities, chosen, axis=3)[..., 0]
    areas = np.trapezoid(curves, dx=1 / steps, axis=2)
    return areas[:, 0], areas[:, 1]


def _predict_all(images: np.ndarray, predict: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    return np.concatenate([predict(images[start:start + PREDICT_BATCH])
                           for start in range(0, len(images), PREDICT_BATCH)])


def rank_correlation(maps: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Spearman's rho between the two maps of each image ((N, ...) each); NaN where one is constant."""
    first, second = maps.reshape(len(maps), -1), other.reshape(len(other), -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return np.array([stats.spearmanr(a, b).statistic for a, b in zip(first, second)], np.float64)


def is_empty(maps: np.ndarray) -> np.ndarray:
    """Maps that are all zero after ReLU (no evidence for the class: a vanished gradient, or for
    Score-CAM masked inputs that all score the same): flagged, never shown blank."""
    return maps.reshape(len(maps), -1).max(axis=1) <= 0
