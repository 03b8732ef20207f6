"""data.color: colour kept where the data is colour, from decoding through training to the overlays."""

import io
import json

import numpy as np
from PIL import Image

from medray.config import DataConfig, load_config
from medray.data.augment import augment_pixels
from medray.data.decode import decode_native, is_colour
from medray.data.sources import discover
from medray.explain.overlay import overlay_png
from medray.models.preprocessing import ModelInput, standardise_per_image, to_model_input

from conftest import DEMO_CONFIG
from data_factory import image_bytes, scan

# Two hues of (almost) the same luminance (Pillow's L = .299 R + .587 G + .114 B): 120.4 and 120.1.
HUES = ((200, 80, 120), (60, 150, 124))


def hue_images(label: int, count: int, rng, size: int = 16) -> np.ndarray:
    """Images whose class shows only in their hue: brightness and texture are drawn alike for both."""
    offset = rng.uniform(-20, 20, (count, 1, 1, 1))
    texture = rng.uniform(-20, 20, (count, size, size, 1))
    return np.clip(np.asarray(HUES[label], float) + offset + texture, 0, 255).astype(np.uint8)


def hue_dataset(path, per_class=(48, 16, 24), seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in zip(("train", "val", "test"), per_class):
        images = np.concatenate([hue_images(label, count, rng) for label in (0, 1)])
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, np.repeat([0, 1], count)[:, None]
    np.savez(path, **arrays)
    return path


def test_rgb_keeps_a_colour_images_channels_and_gray_saved_as_rgb_is_not_colour():
    colour = hue_images(0, 1, np.random.default_rng(1))[0]
    pixels, mode = decode_native(image_bytes(colour), 10**6, "x.png", color="rgb")
    assert mode == "RGB" and np.array_equal(pixels, colour) and is_colour(pixels)
    gray_jpeg = image_bytes(np.dstack([scan(5)] * 3), format="JPEG")
    as_rgb, _ = decode_native(gray_jpeg, 10**6, "x.jpg", color="rgb")
    assert as_rgb.shape == (16, 16, 3) and not is_colour(as_rgb)
    assert decode_native(image_bytes(colour), 10**6, "x.png")[0].shape == (16, 16)  # gray by default


def test_auto_reads_colour_data_as_rgb_and_gray_data_as_gray(tmp_path):
    colour = discover(DataConfig(path=hue_dataset(tmp_path / "hues.npz"), source="npz"))
    assert colour.color == "rgb"
    gray = {f"{split}_{kind}": (np.stack([scan(i) for i in range(6)]) if kind == "images" else np.arange(6) % 2)
            for split in ("train", "val", "test") for kind in ("images", "labels")}
    np.savez(tmp_path / "gray.npz", **gray)
    assert discover(DataConfig(path=tmp_path / "gray.npz", source="npz")).color == "gray"
    forced = discover(DataConfig(path=tmp_path / "hues.npz", source="npz", color="gray"))
    assert forced.color == "gray"


def test_augmentation_moves_all_three_channels_alike():
    gray = scan(3)
    pixels = np.stack([np.dstack([gray, gray, gray])] * 4)
    augment = load_config(DEMO_CONFIG).data.augment.model_copy(update={"rotation_degrees": 30, "brightness": 0.2})
    moved = augment_pixels(pixels, np.linspace(0.1, 0.9, 4), augment)
    assert moved.shape == (4, 16, 16, 3)
    assert np.array_equal(moved[..., 0], moved[..., 1]) and np.array_equal(moved[..., 1], moved[..., 2])
    assert not np.array_equal(moved[..., 0], pixels[..., 0].astype(np.float32))


def test_rgb_pixels_reach_a_gray_backbone_as_three_channels():
    pixels = hue_images(1, 2, np.random.default_rng(2))
    images = to_model_input(pixels, ModelInput(1, standardise_per_image))
    assert images.shape == (2, 16, 16, 3)
    # the green channel stays above the red one, as in the original: no round trip through gray
    assert (images[..., 1].mean() > images[..., 0].mean())


def test_the_overlay_is_drawn_over_the_colour_original():
    pixels = np.zeros((16, 16, 3), np.uint8)
    pixels[..., 1] = 200  # green
    with Image.open(io.BytesIO(overlay_png(pixels, np.zeros((4, 4))))) as image:  # empty map: the original alone
        centre = image.convert("RGB").getpixel((image.width // 2, image.height // 2))
    assert centre[1] > 150 and centre[0] < 50 and centre[2] < 50


def fitted_test_accuracy(data, color: str) -> float:
    """Decode through medray's pipeline (Ray Data), build medray's classifier for the source's colour,
    fit it in this process (Ray Train's plumbing is covered by the run below), score the test split."""
    from medray.config import ModelConfig
    from medray.data.pipeline import read_split
    from medray.keras_setup import keras
    from medray.models.classifier import build_classifier
    from medray.models.preprocessing import input_channels
    from medray.models.registry import get_backbone

    config = DataConfig(path=data, source="npz", color=color)
    source = discover(config)
    backbone = get_backbone("baseline_cnn")

    def split(name):
        rows = read_split(source, name, 16, config).take_all()
        return (to_model_input(np.stack([row["pixels"] for row in rows]), backbone.model_input),
                np.asarray([row["label"] for row in rows]))

    keras.utils.set_random_seed(0)
    model = build_classifier(backbone, 16, 2, ModelConfig(conv_filters=[16, 32]),
                             channels=input_channels(backbone.model_input, source.color))
    model.compile(optimizer=keras.optimizers.Adam(0.003), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(*split("train"), epochs=8, batch_size=16, verbose=0)
    return model.evaluate(*split("test"), verbose=0)[1]


def test_hue_only_classes_are_learned_in_colour_and_not_in_gray(tmp_path, ray_cluster):
    data = hue_dataset(tmp_path / "hues.npz")
    accuracy = {color: fitted_test_accuracy(data, color) for color in ("gray", "auto")}
    assert accuracy["auto"] >= 0.9, accuracy
    assert accuracy["gray"] <= 0.7, accuracy


def test_a_colour_run_trains_on_three_channels_and_draws_colour_overlays(tmp_path, ray_cluster):
    from medray.run import run_job

    data = hue_dataset(tmp_path / "hues.npz", per_class=(8, 4, 4))
    config = load_config(DEMO_CONFIG, [f"data.path={data}", "data.source=npz", f"output.dir={tmp_path}",
                                       "output.run_id=colour", "model.input_size=16", "train.epochs=1",
                                       "train.batch_size=8", "explain.batch_size=8", "report.enabled=false"])
    outcome = run_job(config)
    assert json.loads((outcome.run_dir / "data.json").read_text())["color"] == "rgb"
    assert "(rgb)" in (outcome.run_dir / "summary.txt").read_text()
    import pyarrow.parquet as pq

    from medray.data.manifest import COLOR_KEY

    assert pq.read_schema(outcome.run_dir / "manifest.parquet").metadata[COLOR_KEY] == b"rgb"
    from medray.models.classifier import load_model_file

    assert load_model_file(outcome.run_dir / "model.keras").input_shape == (None, 16, 16, 3)
    overlay = next((outcome.run_dir / "explain" / "overlays").rglob("*.png"))
    with Image.open(overlay) as image:
        assert image.mode == "RGB"
