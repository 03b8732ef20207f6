"""Random flips, rotations, shifts, zooms, brightness and contrast of a whole batch at once, for the
training split only.

Randomness comes from a per-row seed column that Ray Data draws anew for each epoch
(`ray.data.expressions.random` with reseed_after_execution), so a run's augmentations follow its
seed, differ from epoch to epoch, and do not depend on how rows happen to be grouped into batches.

Geometry is one inverse affine map per image (flip, rotation, zoom and shift composed) sampled once,
bilinearly: chained resamplings would blur each image once per transform. The maps, the border
padding, brightness and contrast are computed for the whole batch at once; the resampling is
Pillow's 8-bit affine kernel, one C call per image. TensorFlow's batched ImageProjectiveTransformV3
was measured too: no faster per image on one thread, and its thread pool fights a second Ray Data
task on the same machine (2 tasks on 2 CPUs: 1,519 images/s with it, 3,351 with one thread each).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

SEED_COLUMN = "augment_seed"
# numpy's names for data.augment.fill: "symmetric" repeats the edge pixel, as Keras's "reflect" does.
PAD_MODES = {"reflect": "symmetric", "nearest": "edge"}
# One random number per row for each transform below, always drawn in this order.
_DRAWS = ("flip", "angle", "shift_y", "shift_x", "zoom", "brightness", "contrast")


@dataclass(frozen=True)
class Transforms:
    """One batch's transforms, one entry per image; shifts in pixels, angles in degrees."""

    flip: np.ndarray
    angle: np.ndarray
    shift_y: np.ndarray
    shift_x: np.ndarray
    zoom: np.ndarray
    brightness: np.ndarray  # added, in 0-255 units
    contrast: np.ndarray  # factor on the deviation from the image's mean


def draw_transforms(row_seeds: np.ndarray, image_size: int, settings) -> Transforms:
    """Each row's transforms from its own seed (a float in [0, 1)), scaled by settings.strength."""
    # One generator per row (about 7 us each): a row's draws must not depend on its batch-mates.
    uniforms = np.zeros((len(row_seeds), len(_DRAWS)))
    for row, seed in enumerate(row_seeds):
        uniforms[row] = np.random.default_rng(int(seed * 2**53)).random(len(_DRAWS))
    draw = dict(zip(_DRAWS, uniforms.T))
    strength = settings.strength

    def symmetric(name: str, half_range: float) -> np.ndarray:
        return (2 * draw[name] - 1) * half_range * strength

    shift = settings.shift_fraction * image_size
    return Transforms(
        flip=(draw["flip"] < 0.5) & settings.flip & (strength > 0),
        angle=symmetric("angle", settings.rotation_degrees),
        shift_y=symmetric("shift_y", shift),
        shift_x=symmetric("shift_x", shift),
        # Capped below 1 so that a strength above 1 never zooms to nothing or mirrors the image.
        zoom=1 + np.clip(symmetric("zoom", settings.zoom_fraction), -0.9, 0.9),
        brightness=symmetric("brightness", settings.brightness * 255),
        contrast=np.maximum(1 + symmetric("contrast", settings.contrast), 0.0),
    )


def is_active(settings) -> bool:
    """Whether any transform can change an image: all ranges at zero must cost nothing."""
    ranges = (settings.rotation_degrees, settings.shift_fraction, settings.zoom_fraction, settings.brightness,
              settings.contrast)
    return settings.strength > 0 and (settings.flip or any(value > 0 for value in ranges))


def augment_pixels(pixels: np.ndarray, row_seeds: np.ndarray, settings) -> np.ndarray:
    """(N, H, W) or (N, H, W, 3) 8-bit pixels -> float32 of the same shape and range [0, 255], each
    image transformed by the transforms its row seed draws (the same for all of its channels)."""
    if len(pixels) == 0 or not is_active(settings):
        return np.asarray(pixels, dtype=np.float32)
    transforms = draw_transforms(row_seeds, pixels.shape[2], settings)
    eight_bit = pixels if pixels.dtype == np.uint8 else np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    if eight_bit.ndim == 4:
        moved = np.stack([affine_batch(eight_bit[..., channel], transforms, settings.fill)
                          for channel in range(eight_bit.shape[3])], axis=3)
    else:
        moved = affine_batch(eight_bit, transforms, settings.fill)
    return adjust_intensity(moved.astype(np.float32), transforms.brightness, transforms.contrast)


def affine_batch(images: np.ndarray, transforms: Transforms, fill: str = "reflect") -> np.ndarray:
    """Flip, rotate, zoom and shift each uint8 (H, W) image about its centre in one bilinear sample.

    The area that comes from outside the image is mirrored from inside it ("reflect", d c b a | a b
    c d), repeats the edge ("nearest") or is black ("constant"): the batch is padded just enough
    that every sampled point lies inside, which is what Pillow's kernel then reads.
    """
    count, height, width = images.shape
    inverse = inverse_affine(transforms, height, width).astype(np.float64)
    pad = 0 if fill == "constant" else _reach_outside(inverse, height, width)
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad)), mode=PAD_MODES[fill]) if pad else images
    moved = np.empty((count, height, width), np.uint8)
    for index, (a0, a1, a2, b0, b1, b2) in enumerate(inverse[:, :6]):
        # Pillow samples at pixel centres (x + 0.5), in the padded image.
        coefficients = (a0, a1, a2 + pad + 0.5 * (1 - a0 - a1), b0, b1, b2 + pad + 0.5 * (1 - b0 - b1))
        moved[index] = np.asarray(Image.fromarray(padded[index]).transform(
            (width, height), Image.Transform.AFFINE, coefficients, resample=Image.Resampling.BILINEAR, fillcolor=0))
    return moved


def _reach_outside(inverse: np.ndarray, height: int, width: int) -> int:
    """Pixels by which the farthest output corner's source point lies outside the image (+1 for bilinear)."""
    corner_x, corner_y = np.array([0, width - 1, 0, width - 1]), np.array([0, 0, height - 1, height - 1])
    source_x = inverse[:, 0:1] * corner_x + inverse[:, 1:2] * corner_y + inverse[:, 2:3]
    source_y = inverse[:, 3:4] * corner_x + inverse[:, 4:5] * corner_y + inverse[:, 5:6]
    beyond = max(0.0, -source_x.min(), source_x.max() - (width - 1), -source_y.min(), source_y.max() - (height - 1))
    return int(np.ceil(beyond)) + 1 if beyond > 0 else 0


def inverse_affine(transforms: Transforms, height: int, width: int) -> np.ndarray:
    """(N, 8) rows [a0 a1 a2 b0 b1 b2 0 0] that map each output pixel (x, y) back to the input
    point (a0 x + a1 y + a2, b0 x + b1 y + b2) it is sampled from.

    Forward, about the centre c: out = c + shift + zoom * R(angle) * F * (in - c), with F the
    optional left-right flip; so in = c + F * R(-angle) * (out - c - shift) / zoom.
    """
    theta = np.deg2rad(transforms.angle)
    cos, sin = np.cos(theta) / transforms.zoom, np.sin(theta) / transforms.zoom
    mirror = np.where(transforms.flip, -1.0, 1.0)
    a0, a1, b0, b1 = mirror * cos, mirror * sin, -sin, cos
    centre_x, centre_y = (width - 1) / 2, (height - 1) / 2
    from_x, from_y = centre_x + transforms.shift_x, centre_y + transforms.shift_y
    a2 = centre_x - a0 * from_x - a1 * from_y
    b2 = centre_y - b0 * from_x - b1 * from_y
    zeros = np.zeros_like(a0)
    return np.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1).astype(np.float32)


def adjust_intensity(images: np.ndarray, brightness: np.ndarray, contrast: np.ndarray) -> np.ndarray:
    """Scale each image's deviation from its own mean by `contrast`, add `brightness`, clip to [0, 255]."""
    per_image = (slice(None),) + (None,) * (images.ndim - 1)  # broadcast over H, W (and channels)
    mean = images.mean(axis=tuple(range(1, images.ndim)), keepdims=True)
    factor = contrast[per_image].astype(np.float32)
    # (x - mean) * factor + mean + brightness, in two passes over the pixels instead of four
    adjusted = images * factor
    adjusted += mean * (1 - factor) + brightness[per_image].astype(np.float32)
    return np.clip(adjusted, 0.0, 255.0, out=adjusted)


def augment_volumes(volumes: np.ndarray, row_seeds: np.ndarray, settings) -> np.ndarray:
    """(N, D, H, W) 8-bit volumes -> float32 of the same shape and range [0, 255]: each volume
    flipped left-right, rotated, zoomed and shifted in the axial plane (the same transform for all
    of its D slices, so the volume stays one rigid body) by the transforms its row seed draws, then
    its brightness and contrast jittered. Rotation about the slice axis is the one head motion a
    scanner's positioning leaves; tilts out of plane are left out."""
    if len(volumes) == 0 or not is_active(settings):
        return np.asarray(volumes, dtype=np.float32)
    count, depth, height, width = volumes.shape
    transforms = draw_transforms(row_seeds, width, settings)
    per_slice = Transforms(**{name: np.repeat(getattr(transforms, name), depth) for name in _DRAWS})
    eight_bit = volumes if volumes.dtype == np.uint8 else np.clip(np.rint(volumes), 0, 255).astype(np.uint8)
    moved = affine_batch(eight_bit.reshape(count * depth, height, width), per_slice, settings.fill)
    return adjust_intensity(moved.reshape(volumes.shape).astype(np.float32), transforms.brightness,
                            transforms.contrast)


# The augmentation of a batch by the model input's spatial axes: images (2) or volumes (3).
AUGMENT_BY_SPATIAL_DIMS = {2: augment_pixels, 3: augment_volumes}
