"""MedMNIST .npz: the real PneumoniaMNIST file and generated ones."""

import numpy as np
import pytest

from medray.config import DataConfig
from medray.data.pipeline import read_split
from medray.data.sources import discover
from medray.errors import MedrayError

from conftest import PNEUMONIAMNIST

needs_pneumoniamnist = pytest.mark.skipif(
    not PNEUMONIAMNIST.is_file(), reason=f"PneumoniaMNIST not found at {PNEUMONIAMNIST}")


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def medmnist_arrays(rows=5, size=28):
    rng = np.random.default_rng(0)
    return {f"{split}_{kind}": (rng.integers(0, 255, (rows, size, size), dtype=np.uint8) if kind == "images"
                                else (np.arange(rows) % 2).reshape(rows, 1))
            for split in ("train", "val", "test") for kind in ("images", "labels")}


@needs_pneumoniamnist
def test_pneumoniamnist_class_counts_match_its_readme():
    source = discover(DataConfig(path=PNEUMONIAMNIST, source="npz", class_names=["normal", "pneumonia"]))
    assert source.class_counts == {"train": [1214, 3494], "val": [135, 389], "test": [234, 390]}


@needs_pneumoniamnist
def test_pneumoniamnist_rows_stream_through_ray_data(ray_cluster):
    source = discover(DataConfig(path=PNEUMONIAMNIST, source="npz"))
    rows = read_split(source, "val", 32, DataConfig(path=PNEUMONIAMNIST, source="npz")).take_all()
    assert len(rows) == 524 and len({row["row_id"] for row in rows}) == 524
    assert rows[0]["pixels"].shape == (32, 32) and rows[0]["pixels"].dtype == np.uint8
    assert sum(row["label"] for row in rows) == 389


def test_missing_split_array_is_named(tmp_path):
    arrays = medmnist_arrays()
    del arrays["val_labels"]
    path = write_npz(tmp_path / "x.npz", **arrays)
    with pytest.raises(MedrayError, match="no array 'val_labels'"):
        discover(DataConfig(path=path, source="npz"))


def test_label_arrays_of_different_widths_across_splits_are_refused(tmp_path):
    # Multi-label train labels (N x 14, as ChestMNIST) beside class indices in val and test.
    arrays = medmnist_arrays()
    arrays["train_labels"] = np.zeros((5, 14), np.int64)
    path = write_npz(tmp_path / "chest.npz", **arrays)
    with pytest.raises(MedrayError, match="1 and 14 columns; every split needs the same labels"):
        discover(DataConfig(path=path, source="npz"))


def test_pickled_object_arrays_are_never_loaded(tmp_path):
    arrays = medmnist_arrays()
    arrays["train_labels"] = np.array([{"evil": 1}] * 5, dtype=object)
    path = write_npz(tmp_path / "pickled.npz", **arrays)
    with pytest.raises(MedrayError, match="cannot be read safely"):
        discover(DataConfig(path=path, source="npz"))


@pytest.mark.parametrize("key, array, words", [
    ("train_images", np.zeros((5, 28, 28, 28), np.uint8), "train_images has shape (5, 28, 28, 28) and looks like 3-D volumes"),
    ("val_images", np.zeros((5, 28, 28, 4), np.uint8), "val_images has shape (5, 28, 28, 4) and has 4 channels"),
    ("test_images", np.zeros((5, 28, 28), np.float32), "test_images has shape (5, 28, 28) and is float32"),
    ("train_labels", np.zeros((5, 2, 2), np.int64), "train_labels has shape (5, 2, 2) and dtype int64"),
    ("val_labels", np.zeros(5, np.float64), "val_labels has shape (5,) and dtype float64"),
])
def test_arrays_medray_cannot_use_are_refused_before_ray_naming_file_key_and_shape(tmp_path, key, array, words):
    path = write_npz(tmp_path / "odd.npz", **(medmnist_arrays() | {key: array}))
    with pytest.raises(MedrayError) as caught:
        discover(DataConfig(path=path, source="npz"))
    assert str(caught.value).startswith(f"{path}: {words}")
    assert "\n" not in str(caught.value)


def test_images_and_labels_of_different_lengths_are_refused_with_both_counts(tmp_path):
    arrays = medmnist_arrays()
    arrays["test_labels"] = arrays["test_labels"][:3]
    path = write_npz(tmp_path / "short.npz", **arrays)
    with pytest.raises(MedrayError, match="test_images holds 5 images but test_labels 3 labels"):
        discover(DataConfig(path=path, source="npz"))


def test_single_channel_and_rgb_stacks_decode(tmp_path, ray_cluster):
    arrays = medmnist_arrays(size=16)
    arrays["train_images"] = arrays["train_images"][..., None]  # N x H x W x 1
    arrays["val_images"] = np.repeat(arrays["val_images"][..., None], 3, axis=3)  # gray stored as RGB
    path = write_npz(tmp_path / "channels.npz", **arrays)
    config = DataConfig(path=path, source="npz")
    source = discover(config)
    train = read_split(source, "train", 16, config).take_all()
    val = read_split(source, "val", 16, config).take_all()
    assert np.array_equal(train[0]["pixels"], arrays["train_images"][0, :, :, 0])
    assert np.array_equal(val[0]["pixels"], arrays["val_images"][0, :, :, 0])
