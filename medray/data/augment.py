"""Random flips and rotations of a whole batch at once, for the training split only.

Randomness comes from a per-row seed column that Ray Data draws anew for each epoch
(`ray.data.expressions.random` with reseed_after_execution), so a run's augmentations follow
its seed and still differ from epoch to epoch.
"""

from __future__ import annotations

import numpy as np

SEED_COLUMN = "augment_seed"


def batch_rng(row_seeds: np.ndarray) -> np.random.Generator:
    return np.random.default_rng((np.asarray(row_seeds) * 2**32).astype(np.uint64))


def augment_pixels(pixels: np.ndarray, rng: np.random.Generator, flip: bool,
                   rotation_degrees: float) -> np.ndarray:
    """(N, H, W) float32 -> the same shape, each image flipped and rotated independently."""
    images = np.asarray(pixels, dtype=np.float32)
    if flip:
        flipped = rng.random(len(images)) < 0.5
        images = np.where(flipped[:, None, None], images[:, :, ::-1], images)
    if rotation_degrees > 0:
        angles = rng.uniform(-rotation_degrees, rotation_degrees, len(images))
        images = rotate_batch(images, angles)
    return images


def rotate_batch(images: np.ndarray, angles_degrees: np.ndarray) -> np.ndarray:
    """Rotate each (H, W) image about its centre by its own angle; bilinear, zeros outside."""
    count, height, width = images.shape
    theta = np.deg2rad(angles_degrees)[:, None, None]
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    center_row, center_col = (height - 1) / 2, (width - 1) / 2
    dy, dx = rows - center_row, cols - center_col
    # Inverse mapping: for each output pixel, where it comes from in the input.
    source_rows = center_row + np.cos(theta) * dy - np.sin(theta) * dx
    source_cols = center_col + np.sin(theta) * dy + np.cos(theta) * dx
    return _bilinear(images, source_rows, source_cols)


def _bilinear(images: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    count, height, width = images.shape
    top, left = np.floor(rows).astype(np.int64), np.floor(cols).astype(np.int64)
    frac_row, frac_col = rows - top, cols - left
    index = np.arange(count)[:, None, None]
    result = np.zeros_like(rows, dtype=np.float32)
    for d_row, d_col, weight in ((0, 0, (1 - frac_row) * (1 - frac_col)), (0, 1, (1 - frac_row) * frac_col),
                                 (1, 0, frac_row * (1 - frac_col)), (1, 1, frac_row * frac_col)):
        r, c = top + d_row, left + d_col
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        values = images[index, np.clip(r, 0, height - 1), np.clip(c, 0, width - 1)]
        result += np.where(inside, values, 0.0) * weight
    return result
