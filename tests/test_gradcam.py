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


@pytest.fixture(scope="module")
def explainer():
    backbone = get_backbone("baseline_cnn")
    model = build_classifier(backbone, 32, 3, ModelConfig())
    return CamExplainer(model, backbone.cam_layers[0], "gradcam")


def test_maps_have_the_cam_layer_grid_and_lie_in_unit_range(explainer):
    images = np.random.default_rng(0).random((5, 32, 32, 1)).astype(np.float32)
    maps, probabilities = explainer(images)
    assert maps.shape == (5, 8, 8)  # 32 px after two 2x poolings
    assert maps.min() >= 0 and maps.max() <= 1
    assert np.allclose(maps.reshape(5, -1).max(axis=1)[maps.reshape(5, -1).max(axis=1) > 0], 1)
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)


def test_explaining_another_class_gives_another_map(explainer):
    images = np.random.default_rng(1).random((4, 32, 32, 1)).astype(np.float32)
    _, probabilities = explainer(images)
    predicted = probabilities.argmax(axis=1)
    same, _ = explainer(images, predicted)
    other, _ = explainer(images, (predicted + 1) % 3)
    assert np.allclose(same, explainer(images)[0], atol=1e-5)
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
