"""Decoding and preprocessing, and both on-disk sources through Ray Data (augmentation: test_augment.py)."""

import io
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from ray import cloudpickle
from ray.data.dataset import MaterializedDataset

from medray.config import DataConfig, load_config
from medray.data.decode import decode_gray
from medray.data.pipeline import augment_and_prepare, cached, pieces_with_rows, prepare, read_split, training_data
from medray.data.sources import discover, split_of
from medray.errors import MedrayError
from medray.models.preprocessing import ModelInput, to_model_input
from medray.models.registry import backbone_names, get_backbone
from tests.conftest import DEMO_CONFIG


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def test_decode_converts_rgb_and_16_bit_to_square_gray():
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 0] = 255
    assert decode_gray(png_bytes(rgb), 16, 10**6, "x").shape == (16, 16)
    deep = (np.arange(400, dtype=np.uint16).reshape(20, 20) * 100)
    gray = decode_gray(png_bytes(deep), 20, 10**6, "x")
    assert gray.min() == 0 and gray.max() == 255  # stretched, not clipped to white


def test_decode_refuses_images_over_the_pixel_limit_before_decoding():
    with pytest.raises(MedrayError, match="scan.png: image is 100x100 pixels, over data.max_image_pixels=5000"):
        decode_gray(png_bytes(np.zeros((100, 100), np.uint8)), 16, 5000, "scan.png")


def test_decode_names_the_source_of_empty_and_corrupt_bytes():
    with pytest.raises(MedrayError, match="a.png: the image is empty"):
        decode_gray(b"", 16, 10**6, "a.png")
    with pytest.raises(MedrayError, match="b.png: cannot decode the image"):
        decode_gray(b"not an image", 16, 10**6, "b.png")


def test_model_input_repeats_gray_to_the_backbones_channels():
    three = ModelInput(channels=3, preprocess=lambda x: x / 255)
    pixels = np.full((2, 8, 8), 255, np.uint8)
    assert to_model_input(pixels, three).shape == (2, 8, 8, 3)
    assert to_model_input(pixels, get_backbone("baseline_cnn").model_input).shape == (2, 8, 8, 1)
    assert to_model_input(pixels, three).max() == pytest.approx(1.0)


def test_preprocessing_tasks_are_sent_nothing_that_imports_tensorflow():
    """A fresh Ray worker imports whatever a task's function and arguments reference. TensorFlow
    there would cost each new data worker seconds of CPU, taken from training on a small machine."""
    sent = [augment_and_prepare, prepare, load_config(DEMO_CONFIG).data.augment,
            *(get_backbone(name).model_input for name in backbone_names())]
    script = "import pickle, sys; pickle.loads(sys.stdin.buffer.read()); print('tensorflow' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", script], input=cloudpickle.dumps(sent), capture_output=True,
                            check=True)
    assert loaded.stdout.strip() == b"False"


@pytest.mark.parametrize("name, split", [("train-00000-of-00001.parquet", "train"),
                                         ("validation-00000.parquet", "val"), ("test.parquet", "test"),
                                         ("notes.parquet", None)])
def test_split_names_follow_hugging_face_file_names(name, split):
    assert split_of(name) == split


def test_parquet_and_folders_give_the_same_images_per_class(tiny_dataset, ray_cluster):
    parquet = discover(DataConfig(path=tiny_dataset / "parquet", source="parquet"))
    folders = discover(DataConfig(path=tiny_dataset / "folders", source="folders"))
    assert parquet.class_names == ["no_lesion", "bright_round_lesion", "dark_irregular_lesion"]
    assert parquet.num_rows("test") == folders.num_rows("test") == 24
    by_class = {}
    for source in (parquet, folders):
        rows = read_split(source, "test", 32, DataConfig(path=source.path, source=source.kind)).take_all()
        assert len(rows) == 24 and len({row["row_id"] for row in rows}) == 24
        by_class[source.kind] = {
            name: sorted(row["pixels"].tobytes() for row in rows if source.class_names[row["label"]] == name)
            for name in parquet.class_names}
    assert by_class["parquet"] == by_class["folders"]


@pytest.mark.parametrize("kind", ["parquet", "folders"])
def test_reading_chosen_rows_decodes_only_those_and_gives_the_same_pixels(kind, tiny_dataset, ray_cluster):
    source = discover(DataConfig(path=tiny_dataset / kind, source=kind))
    config = DataConfig(path=source.path, source=kind, mask_column=None)
    every = {row["row_id"]: row for row in read_split(source, "test", 32, config).take_all()}
    chosen = frozenset(sorted(every)[::5])
    pieces = pieces_with_rows(source.pieces["test"], chosen)
    assert sum(len(piece["rows"]) for piece in pieces) == len(chosen)  # the read tasks hold nothing else
    rows = read_split(source, "test", 32, config, row_ids=chosen).take_all()
    assert sorted(row["row_id"] for row in rows) == sorted(chosen)
    for row in rows:
        assert row["label"] == every[row["row_id"]]["label"]
        assert np.array_equal(row["pixels"], every[row["row_id"]]["pixels"])


def test_parquet_rows_carry_binary_masks_that_lie_on_the_lesions(tiny_dataset, ray_cluster):
    source = discover(DataConfig(path=tiny_dataset / "parquet"))
    assert source.has_masks
    rows = read_split(source, "test", 32, DataConfig(path=source.path)).take_all()
    for row in rows:
        assert set(np.unique(row["mask"])) <= {0, 255}
        assert (row["mask"].any()) == (row["label"] != 0)  # no_lesion has an empty mask
    without = read_split(source, "test", 32, DataConfig(path=source.path, mask_column=None)).take(1)[0]
    assert "mask" not in without


@pytest.mark.parametrize("cache", ["always", "never"])
def test_cached_training_data_no_longer_reads_the_files(cache, tiny_dataset, ray_cluster, tmp_path):
    """data.cache keeps decoded rows in the object store, so epochs after the first only augment."""
    shutil.copytree(tiny_dataset / "parquet", tmp_path / "parquet")
    config = load_config(DEMO_CONFIG, [f"data.path={tmp_path / 'parquet'}", "model.input_size=32",
                                       f"data.cache={cache}"])
    data = training_data(discover(config.data), get_backbone("baseline_cnn"), 32, config)
    val_labels = data.val.to_pandas()["label"].tolist()
    shutil.rmtree(tmp_path / "parquet")
    if cache == "never":
        with pytest.raises(Exception, match="No such file|not found|does not exist"):
            data.val.to_pandas()
        return
    assert data.val.to_pandas()["label"].tolist() == val_labels
    assert data.train.count() == data.train_rows == 60


def test_auto_cache_materialises_only_what_fits_a_tenth_of_the_object_store(tiny_dataset, ray_cluster):
    source = discover(DataConfig(path=tiny_dataset / "parquet"))
    decoded = read_split(source, "val", 32, DataConfig(path=tiny_dataset / "parquet"))
    assert isinstance(cached(decoded, 20, 32, "auto"), MaterializedDataset)
    store = ray_cluster.cluster_resources()["object_store_memory"]
    too_many_rows = int(store / (32 * 32)) // 5
    assert not isinstance(cached(decoded, too_many_rows, 32, "auto"), MaterializedDataset)
    assert isinstance(cached(decoded, too_many_rows, 32, "always"), MaterializedDataset)
    assert not isinstance(cached(decoded, 20, 32, "never"), MaterializedDataset)
