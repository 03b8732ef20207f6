"""Volumes (CT, MRI): what a volume source yields, how it becomes uint8 voxels, and its resampling.

A volume source's `RawRow.content` is a `Volume`, so decoding knows it has three spatial axes
(D, H, W) from the row itself, never from a flag: a (H, W, 3) RGB image and a (D, H, W) volume
are told apart by type, not guessed from a shape. Everything here is numpy and scipy only: it runs
in Ray Data's read and map tasks, which must not import TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medray.errors import BadImage

# One volume's voxels may not exceed this many (512^3): a header that promises more is refused
# before anything is allocated.
MAX_VOXELS = 512 ** 3
# The stored mode decoding reports for a volume (beside Pillow's "L", "RGB", ... of images).
VOLUME_MODE = "volume"


# Standard CT windows (level, width) in Hounsfield units, for data.window by name.
CT_WINDOWS = {"brain": (40.0, 80.0), "subdural": (75.0, 215.0), "stroke": (40.0, 40.0),
              "lung": (-600.0, 1500.0), "mediastinum": (50.0, 350.0), "abdomen": (40.0, 400.0),
              "liver": (60.0, 160.0), "bone": (400.0, 1800.0)}


@dataclass(frozen=True)
class Volume:
    """One stored volume: voxels (D, H, W) in any numeric dtype; spacing (mm) along D, H, W if known;
    `window` (level, width) in the voxels' own units (Hounsfield for CT) maps level - width/2 ..
    level + width/2 to 0..255, clipping beyond; None stretches the volume's own range."""

    voxels: np.ndarray
    spacing: tuple[float, float, float] | None = None
    window: tuple[float, float] | None = None


def resolve_window(window) -> tuple[float, float] | None:
    """data.window as (level, width): a name of CT_WINDOWS, a [level, width] pair, or None."""
    if window is None:
        return None
    level, width = CT_WINDOWS[window] if isinstance(window, str) else window
    return float(level), float(width)


def volume_voxels(volume: Volume, where: str) -> np.ndarray:
    """(D, H, W) uint8: the volume's window mapped to 0..255; without one, uint8 kept as stored and
    any other dtype stretched from its own min..max.

    Raises BadImage naming `where` for anything that is not three spatial axes (a 4-D fMRI or
    multi-echo series, a 2-D image) or holds more than MAX_VOXELS voxels.
    """
    voxels = np.asarray(volume.voxels)
    if voxels.ndim == 4 and voxels.shape[-1] == 1:
        voxels = voxels[..., 0]
    if voxels.ndim != 3:
        what = ("a 2-D image" if voxels.ndim == 2 else
                f"a {voxels.ndim}-D array {voxels.shape} (a time series or several echoes?)")
        raise BadImage(f"{where}: is {what}, not one volume (D x H x W); give one 3-D volume per row "
                       "(split a 4-D series into volumes)", "not a volume")
    if voxels.size > MAX_VOXELS:
        raise BadImage(f"{where}: volume of {'x'.join(map(str, voxels.shape))} voxels is over {MAX_VOXELS}; "
                       "crop or downsample it first", "over pixel limit")
    if volume.window is not None:
        level, width = volume.window
        low, high = level - width / 2, level + width / 2
        scaled = (np.clip(voxels.astype(np.float32), low, high) - low) * (255.0 / width)
        return np.rint(scaled).astype(np.uint8)
    if voxels.dtype == np.uint8:
        return voxels
    values = voxels.astype(np.float32)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return np.rint(scaled).astype(np.uint8)


def resize_volume(voxels: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """(D, H, W) uint8 -> `shape` uint8, trilinear (scipy.ndimage.zoom, order 1)."""
    voxels = np.asarray(voxels, np.uint8)
    if voxels.shape == tuple(shape):
        return voxels
    factors = [new / old for new, old in zip(shape, voxels.shape)]
    resized = ndimage.zoom(voxels.astype(np.float32), factors, order=1, mode="nearest", grid_mode=True)
    return np.clip(np.rint(resized), 0, 255).astype(np.uint8)


def resize_mask_volume(mask: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """A lesion mask resampled like its volume, kept binary (255 = lesion) by nearest neighbour."""
    mask = np.asarray(mask) > 0
    if mask.shape != tuple(shape):
        factors = [new / old for new, old in zip(shape, mask.shape)]
        mask = ndimage.zoom(mask.astype(np.uint8), factors, order=0, mode="nearest", grid_mode=True) > 0
    return np.where(mask, 255, 0).astype(np.uint8)


def spatial_shape(size: int | tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """A model input size as its spatial shape: an int is a square image's side, a sequence of three
    is a volume's (D, H, W)."""
    return (int(size), int(size)) if np.ndim(size) == 0 else tuple(int(side) for side in size)


def flat_preview(pixels: np.ndarray, mode: str) -> np.ndarray:
    """A decoded row as one 2-D picture: an image as it is; a volume (mode "volume") as its middle
    axial slice beside its axial maximum-intensity projection, (H, 2W) uint8."""
    if mode != VOLUME_MODE:
        return pixels
    return np.concatenate([pixels[len(pixels) // 2], pixels.max(axis=0)], axis=1)


def stored_shape(pixels: np.ndarray, mode: str) -> tuple[int, ...]:
    """The spatial shape of a decoded row at its own size: (height, width) of an image, gray or RGB;
    (D, H, W) of a volume (mode "volume"). Its mask must have the same."""
    return tuple(pixels.shape) if mode == VOLUME_MODE else tuple(pixels.shape[:2])


def plane_shape(pixels: np.ndarray, mode: str) -> tuple[int, int]:
    """(height, width) of a decoded row: of the image, or of a volume's slices (mode "volume")."""
    return tuple(pixels.shape[-2:]) if mode == VOLUME_MODE else tuple(pixels.shape[:2])
