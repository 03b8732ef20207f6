"""The spatial axes of a feature map, read from the tensor itself: (N, H, W, C) for images,
(N, D, H, W, C) for volumes. CAM methods, the mechanism and the checks ask these helpers instead of
naming axes 1 and 2, so one Grad-CAM serves images and volumes alike."""

from __future__ import annotations

from medray.keras_setup import tf


def spatial_axes(features: tf.Tensor) -> tuple[int, ...]:
    """The axes between batch and channels of a (N, *grid, C) tensor."""
    return tuple(range(1, features.shape.rank - 1))


def grid_axes(maps: tf.Tensor) -> tuple[int, ...]:
    """The axes after the batch of a (N, *grid) map without channels."""
    return tuple(range(1, maps.shape.rank))


def resize_grid(features: tf.Tensor, size) -> tf.Tensor:
    """(N, *grid, C) -> (N, *size, C), bilinear for images, trilinear for volumes.

    Trilinear is separable: each slice is resized bilinearly in (H, W), then the slices are
    interpolated along D (a bilinear resize of (D, H*W) that keeps H*W is linear in D alone).
    """
    if features.shape.rank == 4:
        return tf.image.resize(features, size[-2:], method="bilinear")
    shape = tf.shape(features)
    count, depth, channels = shape[0], shape[1], shape[4]
    height, width = size[1], size[2]
    planes = tf.image.resize(tf.reshape(features, tf.concat([[-1], shape[2:]], axis=0)), (height, width),
                             method="bilinear")
    planes = tf.reshape(planes, tf.stack([count, depth, height * width, channels]))
    stacked = tf.image.resize(planes, tf.stack([size[0], height * width]), method="bilinear")
    return tf.reshape(stacked, tf.stack([count, size[0], height, width, channels]))
