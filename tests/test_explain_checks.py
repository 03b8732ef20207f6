"""The checks of maps on cases whose answer is known: a map on the lesion, a map off it, a model
that only looks at one corner."""

import numpy as np
from scipy import ndimage
import pytest

from medray.explain import checks


def lesion_masks() -> np.ndarray:
    masks = np.zeros((3, 16, 16), np.uint8)
    masks[0, 2:6, 2:6] = 255
    masks[1, 10:14, 10:14] = 255
    return masks  # image 2 has no lesion


def test_pointing_game_scores_a_hit_a_miss_and_skips_images_without_a_lesion():
    masks = lesion_masks()
    maps = np.zeros((3, 16, 16), np.float32)
    maps[0, 3, 3] = 1  # on its lesion
    maps[1, 3, 3] = 1  # far from its lesion
    maps[2, 3, 3] = 1
    scores = checks.pointing_game(maps, masks)
    assert scores[0] == 1 and scores[1] == 0 and np.isnan(scores[2])


def test_a_pointing_tolerance_counts_a_peak_just_outside_the_lesion_and_no_farther():
    masks = lesion_masks()  # image 0's lesion: rows and columns 2..5
    maps = np.zeros((3, 16, 16), np.float32)
    maps[0, 7, 3] = 1  # 2 px below the lesion's last row
    maps[1, 3, 3] = 1  # about 7 px from its lesion
    maps[2, 3, 3] = 1
    strict = checks.pointing_game(maps, masks)
    assert strict[0] == 0 and strict[1] == 0 and np.isnan(strict[2])
    assert checks.pointing_game(maps, masks, tolerance_px=2.5)[0] == 1
    assert checks.pointing_game(maps, masks, tolerance_px=2.0)[0] == 0  # closer than, as TorchRay counts
    assert checks.pointing_game(maps, masks, tolerance_px=2.5)[1] == 0
    assert np.isnan(checks.pointing_game(maps, masks, tolerance_px=2.5)[2])


def test_energy_in_lesion_is_the_share_of_the_map_inside_the_mask():
    masks = lesion_masks()
    maps = np.zeros((3, 16, 16), np.float32)
    maps[0, 2:6, 2:6] = 1  # 16 pixels inside
    maps[0, 10:12, 10:12] = 1  # 4 outside
    maps[1] = 1  # uniform: energy equals the lesion's area share
    energy = checks.energy_in_lesion(maps, masks)
    assert energy[0] == pytest.approx(16 / 20)
    assert energy[1] == pytest.approx(checks.lesion_share(masks)[1]) == pytest.approx(16 / 256)
    assert np.isnan(energy[2])


def test_an_empty_map_gets_no_localisation_score_and_is_flagged_empty():
    masks = lesion_masks()
    maps = np.zeros((3, 16, 16), np.float32)
    assert np.isnan(checks.pointing_game(maps, masks)).all()
    assert checks.is_empty(maps).all()
    maps[1, 0, 0] = 0.2
    assert list(checks.is_empty(maps)) == [True, False, True]


def test_rank_correlation_is_one_for_a_monotone_copy_minus_one_reversed_nan_for_a_constant_map():
    rng = np.random.default_rng(0)
    maps = rng.random((3, 8, 8))
    other = np.stack([maps[0] ** 3, -maps[1], np.zeros((8, 8))])
    rho = checks.rank_correlation(maps, other)
    assert rho[0] == pytest.approx(1) and rho[1] == pytest.approx(-1) and np.isnan(rho[2])


def corner_model(images: np.ndarray) -> np.ndarray:
    """Class 1's probability rises with the brightness of the top-left 4x4 corner only."""
    evidence = images[:, :4, :4, 0].mean(axis=(1, 2))
    return np.stack([1 - evidence, evidence], axis=1)


def test_deleting_the_evidence_first_drops_the_score_faster_than_random_order():
    images = np.zeros((4, 16, 16, 1), np.float32)
    images[:, :4, :4] = 1
    right = np.zeros((4, 16, 16), np.float32)
    right[:, :4, :4] = 1
    wrong = np.zeros((4, 16, 16), np.float32)
    wrong[:, 12:, 12:] = 1
    targets = np.ones(4, np.int64)
    deletion, insertion = checks.deletion_insertion_auc(images, right, targets, corner_model, steps=16)
    random_deletion, random_insertion = checks.deletion_insertion_auc(
        images, right, targets, corner_model, steps=16, order="random")
    wrong_deletion, wrong_insertion = checks.deletion_insertion_auc(images, wrong, targets, corner_model, steps=16)
    assert (deletion < random_deletion - 0.1).all() and (deletion < wrong_deletion - 0.1).all()
    assert (insertion > random_insertion + 0.1).all() and (insertion > wrong_insertion + 0.1).all()
    assert ((0 <= deletion) & (deletion <= 1) & (0 <= insertion) & (insertion <= 1)).all()


def test_curves_equal_the_step_by_step_definition_and_forward_calls_stay_within_the_batch():
    """Petsiuk et al.'s curves written out: at step i of n, the i/n share of pixels first in the
    order is taken from the blurred copy (deletion) or from the image (insertion), the target's
    probability is read, and the area is the trapezoid rule over [0, 1]. The function under test
    shares the blur and the ends between calls and batches the middle steps of several images."""
    rng = np.random.default_rng(3)
    images = rng.random((37, 12, 10, 2)).astype(np.float32)
    maps = rng.random((37, 12, 10)).astype(np.float32)
    targets = rng.integers(0, 3, 37)
    weights = rng.normal(size=(12 * 10 * 2, 3))
    calls = []

    def predict(batch):
        calls.append(len(batch))
        logits = batch.reshape(len(batch), -1) @ weights
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)

    steps = 5
    blurred = ndimage.gaussian_filter(images, sigma=(0, 12 / checks.BLUR_FRACTION, 10 / checks.BLUR_FRACTION, 0))
    baseline = checks.faithfulness_baseline(images, predict)
    for order in ("map", "random"):
        deletion, insertion = checks.deletion_insertion_auc(images, maps, targets, predict, steps, order=order,
                                                            baseline=baseline)
        tie_break = np.random.default_rng(0).random((37, 120))
        for index in range(37):
            keys = (tie_break[index], -maps[index].ravel()) if order == "map" else (tie_break[index],)
            first = np.lexsort(keys)
            points = {"deletion": [], "insertion": []}
            for step in range(steps + 1):
                changed = np.zeros(120, bool)
                changed[first[:round(step * 120 / steps)]] = True
                changed = changed.reshape(12, 10, 1)
                for curve, image in (("deletion", np.where(changed, blurred[index], images[index])),
                                     ("insertion", np.where(changed, images[index], blurred[index]))):
                    points[curve].append(predict(image[np.newaxis])[0, targets[index]])
            assert deletion[index] == pytest.approx(np.trapezoid(points["deletion"], dx=1 / steps), abs=1e-6)
            assert insertion[index] == pytest.approx(np.trapezoid(points["insertion"], dx=1 / steps), abs=1e-6)
    assert max(calls) <= checks.PREDICT_BATCH


def test_upsampled_maps_have_the_image_size_and_keep_the_peak_in_place():
    maps = np.zeros((1, 4, 4), np.float32)
    maps[0, 0, 0] = 1
    upsampled = checks.upsample_maps(maps, (16, 16))
    assert upsampled.shape == (1, 16, 16)
    assert np.unravel_index(upsampled[0].argmax(), (16, 16))[0] < 4
