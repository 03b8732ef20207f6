"""Synthetic T1-like head volumes with known lesions: the 3-D demo data, no download needed.

The 3-D sibling of phantoms.py: a head-like ellipsoid (scalp shell, CSF rim, brain, two lateral
ventricles) drawn in normalised coordinates (the volume spans -1..1 on every axis), one lesion per
volume at most: a bright round one (an enhancing lesion) or a dark lobulated one (near CSF), the
same three classes as the 2-D demo. The lesion is blended in before the scanner (bias field, gain,
Rician noise) is simulated, so its mask marks tissue that changed, not noise. Axes are (D, H, W):
slices, rows, columns, as MedMNIST-3D stores them.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medray.data.phantoms import CLASS_NAMES, CLASS_SHARES, CSF, GRAY_MATTER, SCALP, WHITE_MATTER, proportional_class_counts

# Smallest and largest side the phantoms are drawn at (the model input is resampled from these).
MIN_VOLUME_SIZE, MAX_VOLUME_SIZE = 16, 128
# Lesion radius as a fraction of the volume side: small enough to need localising, large enough
# to be a few voxels across at 16^3.
LESION_RADIUS = (0.09, 0.14)
# Intensity of a lesion's core: bright outshines white matter, dark sits near CSF.
LESION_LEVELS = {1: (0.92, 1.0), 2: (0.14, 0.24)}

__all__ = ["CLASS_NAMES", "CLASS_SHARES", "make_volume_phantoms"]


def make_volume_phantoms(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n volumes, lesion masks and labels; class counts follow CLASS_SHARES exactly, shuffled.

    Returns images (n, size, size, size) uint8, masks (n, size, size, size) bool (all False for
    "no_lesion") and labels (n,) int64 indices into CLASS_NAMES.
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(len(CLASS_NAMES), dtype=np.int64), proportional_class_counts(n)))
    images = np.zeros((n, size, size, size), np.uint8)
    masks = np.zeros((n, size, size, size), bool)
    for index, label in enumerate(labels):
        images[index], masks[index] = make_volume_phantom(rng, int(label), size)
    return images, masks, labels


def make_volume_phantom(rng: np.random.Generator, label: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One (size, size, size) uint8 volume and its bool lesion mask."""
    z, y, x = _grid(size)
    # The head: an ellipsoid a little longer front to back (H) than wide, jittered per subject.
    radii = np.array([0.78, 0.9, 0.8]) * rng.uniform(0.92, 1.02, 3)
    radius = np.sqrt((z / radii[0]) ** 2 + (y / radii[1]) ** 2 + (x / radii[2]) ** 2)
    intensity = np.zeros_like(radius)
    intensity[radius < 1.0] = SCALP
    intensity[radius < 0.9] = CSF
    brain = radius < 0.84
    # Gray matter outside, white matter inside, with smooth texture so no two volumes look alike.
    texture = ndimage.gaussian_filter(rng.standard_normal(radius.shape), size / 16) * 0.5
    intensity[brain] = np.where(radius[brain] > 0.7, GRAY_MATTER, WHITE_MATTER) + 0.04 * texture[brain]
    ventricles = np.zeros_like(brain)
    for side in (-1, 1):
        ventricles |= ((x - side * 0.13) / 0.08) ** 2 + (y / 0.32) ** 2 + ((z - 0.05) / 0.18) ** 2 < 1
    intensity[ventricles] = CSF
    mask = np.zeros_like(brain)
    if label:
        weight = _lesion(rng, brain & ~ventricles, z, y, x, irregular=label == 2)
        level = rng.uniform(*LESION_LEVELS[label])
        intensity = intensity * (1 - weight) + level * weight
        mask = weight >= 0.5
    return _scan(rng, intensity, z, y, x), mask


def _lesion(rng: np.random.Generator, room: np.ndarray, z, y, x, irregular: bool) -> np.ndarray:
    """Lesion weight 0..1 per voxel, centred where the whole lesion stays inside `room`."""
    size = room.shape[0]
    radius = rng.uniform(*LESION_RADIUS) * 2  # in normalised units (the side spans 2)
    depth = ndimage.distance_transform_edt(room) * (2.0 / size)
    inside = np.argwhere(depth >= radius * 1.4)
    inside = inside if len(inside) else np.argwhere(depth == depth.max())
    centre = _grid_axis(size)[inside[rng.integers(len(inside))]]
    dz, dy, dx = z - centre[0], y - centre[1], x - centre[2]
    distance = np.sqrt(dz ** 2 + dy ** 2 + dx ** 2)
    edge = np.full_like(distance, radius)
    if irregular:  # a lobulated outline: the radius varies with direction by a few low harmonics
        theta, phi = np.arccos(np.clip(dz / np.maximum(distance, 1e-9), -1, 1)), np.arctan2(dy, dx)
        for harmonic in (2, 3):
            edge *= 1 + rng.uniform(0.1, 0.25) / harmonic * np.cos(harmonic * phi + rng.uniform(0, 2 * np.pi)) \
                * np.sin(theta + rng.uniform(0, np.pi)) ** 2
    t = np.clip((1.3 * edge - distance) / (0.6 * edge), 0, 1)
    return t * t * (3 - 2 * t)


def _scan(rng: np.random.Generator, intensity: np.ndarray, z, y, x) -> np.ndarray:
    """Coil bias field, receiver gain, slight blur and Rician noise, as a magnitude image has them."""
    bias = 1 + rng.uniform(-0.1, 0.1) * x + rng.uniform(-0.1, 0.1) * y + rng.uniform(-0.1, 0.1) * z
    signal = ndimage.gaussian_filter(intensity * bias * rng.uniform(0.75, 1.0), 0.6)
    sigma = rng.uniform(0.01, 0.03)
    real, imaginary = signal + rng.normal(0, sigma, signal.shape), rng.normal(0, sigma, signal.shape)
    return np.clip(np.rint(np.hypot(real, imaginary) * 240), 0, 255).astype(np.uint8)


def _grid_axis(size: int) -> np.ndarray:
    return (np.arange(size) + 0.5) * (2.0 / size) - 1


def _grid(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    axis = _grid_axis(size)
    return np.meshgrid(axis, axis, axis, indexing="ij")
