"""Grad-CAM computed in one compiled call per batch, and overlays a person can read."""

import io

import numpy as np
import pytest
from PIL import Image

from medray.config import ModelConfig
from medray.explain.cam import CamExplainer
from medray.explain.overlay import overlay_png
from medray.filenames import safe_filename
from medray.models.classifier import build_classifier
from medray.models.registry import get_backbone


KEY = ("gradcam", get_backbone("baseline_cnn").cam_layers[0])


@pytest.fixture(scope="module")
def explainer():
    backbone = get_backbone("baseline_cnn")
    model = build_classifier(backbone, 32, 3, ModelConfig())
    return CamExplainer(model, backbone.cam_layers[0], "gradcam")


def test_maps_have_the_cam_layer_grid_and_lie_in_unit_range(explainer):
    images = np.random.default_rng(0).random((5, 32, 32, 1)).astype(np.float32)
    explained = explainer(images)
    maps, probabilities = explained.maps[KEY][:, 0], explained.probabilities
    assert maps.shape == (5, 8, 8)  # 32 px after two 2x poolings
    assert maps.min() >= 0 and maps.max() <= 1
    assert np.allclose(maps.reshape(5, -1).max(axis=1)[maps.reshape(5, -1).max(axis=1) > 0], 1)
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)


def test_explaining_another_class_gives_another_map(explainer):
    images = np.random.default_rng(1).random((4, 32, 32, 1)).astype(np.float32)
    predicted = explainer(images).probabilities.argmax(axis=1)
    same = explainer(images, predicted).maps[KEY]
    other = explainer(images, (predicted + 1) % 3).maps[KEY]
    assert np.allclose(same, explainer(images).maps[KEY], atol=1e-5)
    assert not np.allclose(same, other)


def test_overlay_is_an_enlarged_rgb_png_with_the_heat_where_the_map_is_high():
    pixels = np.full((32, 32), 128, np.uint8)
    cam = np.zeros((8, 8), np.float32)
    cam[0, 0] = 1.0
    with Image.open(io.BytesIO(overlay_png(pixels, cam))) as image:
        rgb = np.asarray(image.convert("RGB"), dtype=np.int32)
    assert rgb.shape == (224, 224, 3)
    hot, cold = rgb[5, 5], rgb[200, 200]
    assert hot[0] > cold[0] + 50  # red where the map peaks, blue elsewhere (jet)


@pytest.mark.parametrize("name", ["../../etc/passwd", "a/b", ".hidden", "NORMAL", "x#1", ""])
def test_names_from_data_become_safe_single_file_names(name):
    safe = safe_filename(name)
    assert "/" not in safe and not safe.startswith(".") and safe
    assert safe == name or safe != safe_filename(name + "!")


def test_an_empty_map_is_flagged_in_its_overlay_not_drawn_as_a_blank_heat_map():
    pixels = np.full((32, 32), 128, np.uint8)
    with Image.open(io.BytesIO(overlay_png(pixels, np.zeros((8, 8), np.float32)))) as image:
        rgb = np.asarray(image.convert("RGB"), dtype=np.int32)
    assert tuple(rgb[1, 112]) == (255, 0, 0)  # the red frame
    assert abs(rgb[112, 112] - 128).max() <= 1  # the original, untinted


def test_the_colour_bar_widens_the_overlay_and_runs_from_hot_to_cold():
    pixels = np.full((32, 32), 128, np.uint8)
    cam = np.full((8, 8), 0.5, np.float32)
    with Image.open(io.BytesIO(overlay_png(pixels, cam, colorbar=True))) as image:
        rgb = np.asarray(image.convert("RGB"), dtype=np.int32)
    assert rgb.shape[1] > 224
    top, bottom = rgb[12, 224 + 10], rgb[212, 224 + 10]
    assert top[0] > top[2] and bottom[2] > bottom[0]  # red (1) at the top, blue (0) at the bottom
