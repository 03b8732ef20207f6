"""Test-time augmentation: a map that follows the image does not move when the image is nudged;
one tied to fixed positions does."""

import numpy as np
import pytest

from medray.explain.cam import CamExplainer
from medray.explain.uncertainty import _apply, augmentations, tta_uncertainty
from medray.keras_setup import keras


def test_each_augmentation_is_undone_by_its_inverse_inside_the_image():
    images = np.random.default_rng(0).random((2, 16, 16))
    for name, spec in augmentations((16, 16)):
        back = _apply(_apply(images, spec), spec, inverse=True)
        assert np.allclose(back[:, 1:-1, 1:-1], images[:, 1:-1, 1:-1]), name


def flat_model(position_weights: np.ndarray) -> keras.Model:
    """score of class 1 = sum over pixels of weight * pixel, through a 1x1 'features' layer."""
    inputs = keras.Input((16, 16, 1))
    features = keras.layers.Conv2D(1, 1, use_bias=False, name="features")(inputs)
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(features))
    model = keras.Model(inputs, outputs)
    model.get_layer("features").set_weights([np.ones((1, 1, 1, 1), np.float32)])
    kernel = np.stack([np.zeros(256), position_weights.ravel()], axis=1).astype(np.float32)
    model.layers[-1].set_weights([kernel, np.zeros(2, np.float32)])
    return model


def test_a_map_tied_to_fixed_positions_moves_more_than_one_that_follows_the_image():
    images = np.zeros((4, 16, 16, 1), np.float32)
    images[:, 5:9, 4:8] = 1  # a bright spot, away from the border
    targets = np.ones(4, np.int64)
    # Uniform weights: the score ignores where the spot is, Grad-CAM's map is the image itself.
    follows = tta_uncertainty(CamExplainer(flat_model(np.full((16, 16), 0.1)), "features", "gradcam"),
                              images, targets, 2)[("gradcam", "features")]
    # HiResCAM on random per-position weights: the map is the image times weights fixed in place.
    fixed = tta_uncertainty(CamExplainer(flat_model(np.random.default_rng(1).random((16, 16))), "features",
                                         "hirescam"), images, targets, 2)[("hirescam", "features")]
    assert follows["map_spread"] == pytest.approx(np.zeros(4), abs=1e-6)
    assert (fixed["map_spread"] > 0.01).all()
    assert fixed["spread_map"].shape == (4, 16, 16)
    assert ((0 <= follows["entropy"]) & (follows["entropy"] <= 1)).all()
