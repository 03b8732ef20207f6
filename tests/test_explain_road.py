"""ROAD (Rong et al. 2022) on cases whose answer is known: imputation that leaks no shape, a map on
the evidence against its inverse and random values, and the verdicts read from those figures."""

import numpy as np
import pytest

from medray.explain import road, verdicts


def test_imputation_reproduces_a_linear_ramp_exactly():
    """A linear function is its own neighbours' symmetric weighted mean, so with noise 0 the
    removed pixels come back exactly, whatever shape was removed inside the image (at the border
    the mean is one-sided)."""
    row, col = np.mgrid[0:20, 0:24]
    image = (0.3 * row + 0.7 * col)[np.newaxis, ..., np.newaxis] * np.array([1.0, -2.0])
    removed = np.zeros((1, 20, 24), bool)
    removed[0, 3:15, 5:21] = True
    removed[0, 16:18, 2] = True  # a second region
    imputed = road.noisy_linear_imputation(image, removed, noise=0)
    assert np.abs(imputed - image).max() < 1e-9


def test_a_removed_dark_lesion_takes_the_brightness_of_its_surroundings():
    """What a blurred copy cannot do: the imputed lesion is as bright as the tissue around it, so
    the removal leaves no dark spot for the model to find."""
    image = np.full((2, 16, 16, 1), 0.8)
    image[:, 5:9, 6:10] = 0.1  # the dark lesion
    removed = np.zeros((2, 16, 16), bool)
    removed[:, 4:10, 5:11] = True
    removed[1, 0, 0] = True  # a second system in the same solve
    imputed = road.noisy_linear_imputation(image, removed, noise=0.01)
    assert np.abs(imputed[:, 4:10, 5:11] - 0.8).max() < 0.05
    assert np.array_equal(imputed[~removed], image[~removed])


def test_imputation_refuses_an_image_with_nothing_left():
    with pytest.raises(ValueError, match="every pixel removed"):
        road.noisy_linear_imputation(np.zeros((1, 4, 4, 1)), np.ones((1, 4, 4), bool))


def test_most_and_least_relevant_first_remove_the_top_and_bottom_percentiles():
    maps = np.arange(100, dtype=np.float64).reshape(1, 10, 10)
    morf, lerf = road.removal_masks(maps, percentiles=(10, 50))
    assert morf[0, 0].sum() == 10 and morf[0, 0].reshape(-1)[90:].all()
    assert lerf[0, 1].sum() == 50 and lerf[0, 1].reshape(-1)[:50].all()


def corner_model(images: np.ndarray) -> np.ndarray:
    """Class 1's probability is the brightness of the top-left 4x4 corner."""
    evidence = np.clip(images[:, :4, :4, 0].mean(axis=(1, 2)), 0, 1)
    return np.stack([1 - evidence, evidence], axis=1)


def test_a_map_on_the_evidence_beats_random_values_and_its_inverse_does_not():
    rng = np.random.default_rng(0)
    images = np.full((6, 16, 16, 1), 0.05) + rng.normal(0, 0.01, (6, 16, 16, 1))
    images[:, :4, :4] = 1
    right = np.zeros((6, 16, 16))
    right[:, :4, :4] = 1
    right += rng.random(right.shape) * 0.1
    targets = np.ones(6, np.int64)
    scores = {name: road.road_score(*road.road_curves(images, maps, targets, corner_model))
              for name, maps in (("right", right), ("inverted", -right), ("random", rng.random(right.shape)))}
    assert (scores["right"] > 0.3).all()
    assert (scores["inverted"] < -0.3).all()
    assert np.abs(scores["random"]).mean() < 0.2
    faithful = verdicts.road_verdict(_difference(scores["right"] - scores["random"]))
    inverted = verdicts.road_verdict(_difference(scores["inverted"] - scores["random"]))
    assert (faithful, inverted) == (verdicts.FAITHFUL, verdicts.NO_BETTER)


def _difference(values):
    from medray.explain.scorecard import figure

    return figure(values)


def test_concentration_is_the_top_share_for_a_uniform_map_one_for_a_spot_and_zero_when_empty():
    maps = np.zeros((3, 20, 20))
    maps[0] = 1
    maps[1, 3:5, 3:5] = 1
    assert road.concentration(maps) == pytest.approx([0.05, 1.0, 0.0])


def test_a_spread_class_is_no_localised_evidence_and_a_failed_randomisation_overrides_all():
    faithful = {"value": 0.2, "ci": [0.1, 0.3], "n": 30}
    assert verdicts.class_verdict(False, 0.6, faithful) == verdicts.FAITHFUL
    assert verdicts.class_verdict(False, 0.08, faithful) == verdicts.SPREAD
    assert verdicts.class_verdict(True, 0.6, faithful) == verdicts.FAILS
    worse = {"value": -0.2, "ci": [-0.3, -0.1], "n": 30}
    line = verdicts.method_verdict("passed (weights re-initialised only; labels permuted: not run)",
                                   {"a": verdicts.NO_BETTER}, worse)
    assert line.startswith("no better than random") and "labels permuted: not run" in line
    assert "passed" not in line
