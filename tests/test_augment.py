"""Training-split augmentation: seeded per row, within its configured bounds, one affine resampling."""

import numpy as np
import pytest

from medray.config import AugmentConfig
from medray.data.augment import Transforms, affine_batch, augment_pixels, draw_transforms, is_active

OFF = AugmentConfig(flip=False, rotation_degrees=0)
ALL = AugmentConfig(flip=True, rotation_degrees=15, shift_fraction=0.1, zoom_fraction=0.1, brightness=0.1,
                    contrast=0.2)


def seeds(count: int, start: int = 0) -> np.ndarray:
    return np.random.default_rng(start).random(count)


def textured(count: int, size: int = 24) -> np.ndarray:
    """Smooth mid-grey images (no clipping at 0 or 255) with structure a transform must move."""
    y, x = np.mgrid[0:size, 0:size] / size
    phases = np.random.default_rng(1).random((count, 1, 1))
    return np.rint(128 + 60 * np.sin(6 * x + 3 * phases) * np.cos(4 * y)).astype(np.uint8)


def only(count: int, **values) -> Transforms:
    """Transforms that are identity except for the given values."""
    neutral = {"flip": False, "angle": 0.0, "shift_y": 0.0, "shift_x": 0.0, "zoom": 1.0, "brightness": 0.0,
               "contrast": 1.0}
    return Transforms(**{name: np.full(count, values.get(name, default)) for name, default in neutral.items()})


def test_the_same_row_seeds_give_the_same_batch_and_other_seeds_another():
    images = textured(8)
    first = augment_pixels(images, seeds(8), ALL)
    assert np.array_equal(first, augment_pixels(images, seeds(8), ALL))
    assert not np.allclose(first, augment_pixels(images, seeds(8, start=1), ALL))  # the next epoch


def test_a_rows_augmentation_does_not_depend_on_its_batch():
    images, row_seeds = textured(8), seeds(8)
    whole = augment_pixels(images, row_seeds, ALL)
    halves = np.concatenate([augment_pixels(images[:3], row_seeds[:3], ALL),
                             augment_pixels(images[3:], row_seeds[3:], ALL)])
    assert np.allclose(whole, halves)


def test_strength_zero_and_all_ranges_zero_are_the_identity():
    images = textured(4)
    assert np.array_equal(augment_pixels(images, seeds(4), ALL.model_copy(update={"strength": 0})), images)
    assert np.array_equal(augment_pixels(images, seeds(4), OFF), images)
    assert not is_active(OFF) and is_active(OFF.model_copy(update={"flip": True}))


def test_drawn_transforms_stay_within_the_configured_ranges_times_strength():
    settings = ALL.model_copy(update={"strength": 2.0})
    drawn = draw_transforms(seeds(2000), 100, settings)
    assert np.abs(drawn.angle).max() <= 30 and np.abs(drawn.angle).max() > 25
    assert np.abs(drawn.shift_x).max() <= 20 and np.abs(drawn.shift_y).max() > 17  # 0.1 * 100 px * 2
    assert drawn.zoom.min() >= 0.8 and drawn.zoom.max() <= 1.2
    assert np.abs(drawn.brightness).max() <= 0.2 * 255
    assert drawn.contrast.min() >= 0.6 and drawn.contrast.max() <= 1.4
    assert 0.4 < drawn.flip.mean() < 0.6


def test_augmented_pixels_stay_in_range_and_differ_from_the_input():
    images = np.random.default_rng(2).integers(0, 256, (16, 20, 20)).astype(np.float32)
    strong = ALL.model_copy(update={"brightness": 0.5, "contrast": 0.9, "strength": 2.0})
    augmented = augment_pixels(images, seeds(16), strong)
    assert augmented.dtype == np.float32 and augmented.shape == images.shape
    assert augmented.min() >= 0 and augmented.max() <= 255
    assert not np.allclose(augmented, images)


def test_a_shift_moves_the_content_by_that_many_pixels():
    image = np.zeros((1, 16, 16), np.uint8)
    image[0, 5, 7] = 200
    moved = affine_batch(image, only(1, shift_y=2.0, shift_x=-3.0))
    assert np.argwhere(moved[0] > 100).tolist() == [[7, 4]]
    assert moved[0, 7, 4] == pytest.approx(200)


def test_a_flip_mirrors_left_and_right_and_180_degrees_turns_the_image_over():
    images = textured(2)
    assert np.allclose(affine_batch(images, only(2, flip=True)), images[:, :, ::-1])
    # sin(180 degrees) is 1e-16, not 0: the 8-bit kernel may land one grey level lower
    turned = affine_batch(images, only(2, angle=180.0)).astype(int)
    assert np.abs(turned - images[:, ::-1, ::-1]).max() <= 1


def test_uncovered_corners_are_mirrored_by_default_and_black_only_when_asked():
    bright = np.full((1, 16, 16), 180, np.uint8)
    turned = only(1, angle=45.0)
    assert affine_batch(bright, turned, "constant")[0, 0, 0] == 0
    assert affine_batch(bright, turned, "reflect")[0, 0, 0] == pytest.approx(180)
    assert affine_batch(bright, turned)[0, 0, 0] == pytest.approx(180)


def test_zooming_in_by_two_spreads_the_centre_over_the_image():
    image = np.zeros((1, 17, 17), np.uint8)
    image[0, 7:10, 7:10] = 100  # a 3 px square on the centre pixel (8, 8)
    zoomed = affine_batch(image, only(1, zoom=2.0))
    assert zoomed[0, 8, 8] == pytest.approx(100)
    assert np.count_nonzero(zoomed[0] > 99) > 9 and zoomed[0, 8, 12] == 0


def test_brightness_moves_the_mean_and_contrast_scales_the_spread():
    images = textured(6)
    brighter = augment_pixels(images, seeds(6), OFF.model_copy(update={"brightness": 0.1}))
    offsets = brighter.mean(axis=(1, 2)) - images.mean(axis=(1, 2))
    assert np.allclose(brighter.std(axis=(1, 2)), images.std(axis=(1, 2)), rtol=1e-4)
    assert np.abs(offsets).max() <= 25.5 and np.ptp(offsets) > 1
    contrasted = augment_pixels(images, seeds(6), OFF.model_copy(update={"contrast": 0.3}))
    ratios = contrasted.std(axis=(1, 2)) / images.std(axis=(1, 2))
    assert np.allclose(contrasted.mean(axis=(1, 2)), images.mean(axis=(1, 2)), atol=1e-3)
    assert ratios.min() >= 0.7 - 1e-4 and ratios.max() <= 1.3 + 1e-4 and np.ptp(ratios) > 0.01
