"""The demo phantoms: lesions where the masks say, reproducible, imbalanced, in both layouts."""

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from scipy import ndimage

from medray.data.phantoms import (
    CLASS_NAMES,
    CLASS_SHARES,
    draw_phantom,
    make_phantom,
    make_phantoms,
    proportional_class_counts,
)
from medray.data.synth import ROW_GROUP_ROWS, split_seed, write_demo_dataset
from medray.errors import MedrayError

NO_LESION, BRIGHT, DARK = range(3)


def phantoms(label, size, count=12, seed=0):
    rng = np.random.default_rng(seed)
    return [draw_phantom(rng, label, size) for _ in range(count)]


def surrounding_tissue(phantom):
    """Brain pixels 2-3 pixels outside the lesion mask: past its soft edge, still close by."""
    near = ndimage.binary_dilation(phantom.lesion, iterations=3)
    return near & ~ndimage.binary_dilation(phantom.lesion, iterations=1) & phantom.brain


def decode(png_bytes):
    return np.asarray(Image.open(io.BytesIO(png_bytes)))


@pytest.mark.parametrize("size", [32, 64])
def test_bright_lesion_is_clearly_brighter_than_the_tissue_around_it(size):
    for phantom in phantoms(BRIGHT, size):
        inside = phantom.image[phantom.lesion].mean()
        around = phantom.image[surrounding_tissue(phantom)].mean()
        assert inside > around + 30, (inside, around)


@pytest.mark.parametrize("size", [32, 64])
def test_dark_lesion_is_clearly_darker_than_the_tissue_around_it(size):
    for phantom in phantoms(DARK, size):
        inside = phantom.image[phantom.lesion].mean()
        around = phantom.image[surrounding_tissue(phantom)].mean()
        assert inside < around - 30, (inside, around)


@pytest.mark.parametrize("size", [28, 64, 256])
@pytest.mark.parametrize("label", [BRIGHT, DARK])
def test_lesion_mask_lies_inside_the_brain_with_a_pixel_to_spare(label, size):
    for phantom in phantoms(label, size, count=6 if size < 256 else 2):
        assert phantom.lesion.any()
        assert not (ndimage.binary_dilation(phantom.lesion) & ~phantom.brain).any()


def test_brain_mask_sits_inside_a_bright_scalp_on_a_dark_background():
    for phantom in phantoms(NO_LESION, 64, count=6):
        inner_head = ndimage.binary_erosion(phantom.head, iterations=3)
        scalp = ndimage.binary_erosion(phantom.head, iterations=1) & ~inner_head
        assert not (phantom.brain & ~inner_head).any()
        assert phantom.image[~phantom.head].mean() < 20
        assert phantom.image[scalp].mean() > phantom.image[phantom.brain].mean() + 20


@pytest.mark.parametrize("size", [28, 48, 128])
def test_no_lesion_phantom_has_an_empty_mask(size):
    rng = np.random.default_rng(1)
    for _ in range(4):
        image, mask = make_phantom(rng, NO_LESION, size)
        assert image.shape == mask.shape == (size, size)
        assert image.dtype == np.uint8 and mask.dtype == bool
        assert not mask.any()


def test_make_phantoms_masks_are_empty_exactly_for_label_zero():
    _, masks, labels = make_phantoms(30, 28, seed=4)
    assert np.array_equal(masks.any(axis=(1, 2)), labels != NO_LESION)


def test_same_seed_gives_identical_phantoms():
    first, second = make_phantoms(9, 32, seed=11), make_phantoms(9, 32, seed=11)
    for a, b in zip(first, second):
        assert np.array_equal(a, b)


def test_different_seed_gives_different_phantoms():
    images_a, _, _ = make_phantoms(9, 32, seed=11)
    images_b, _, _ = make_phantoms(9, 32, seed=12)
    assert not np.array_equal(images_a, images_b)


def test_class_counts_follow_the_shares_exactly():
    _, _, labels = make_phantoms(40, 28, seed=0)
    counts = np.bincount(labels, minlength=len(CLASS_NAMES))
    assert counts.tolist() == [round(40 * share) for share in CLASS_SHARES]  # 24, 10, 6
    assert counts[0] > counts[1] > counts[2] > 0


def test_labels_come_shuffled_not_sorted_by_class():
    _, _, labels = make_phantoms(40, 28, seed=0)
    assert (np.diff(labels) < 0).any()


@pytest.mark.parametrize("n", range(3, 13))
def test_every_class_has_a_sample_from_three_samples_on(n):
    counts = proportional_class_counts(n)
    assert counts.sum() == n
    assert (counts >= 1).all()
    assert counts[0] == counts.max()


def test_splits_get_independent_seeds():
    assert len({split_seed(7, split) for split in ("train", "val", "test")}) == 3
    assert split_seed(7, "train") != split_seed(8, "train")


# --- the written dataset -------------------------------------------------------------------------

SMALL = dict(train=8, val=3, test=3, size=32)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    # More train rows than a row group holds, so the row-group limit is exercised.
    out = tmp_path_factory.mktemp("demo") / "phantoms"
    summary = write_demo_dataset(out, train=ROW_GROUP_ROWS + 4, val=6, test=5, size=28, seed=5)
    return out, summary


def parquet_file(root, split):
    return root / "parquet" / f"{split}-00000-of-00001.parquet"


def test_rewriting_with_the_same_seed_gives_identical_files(tmp_path):
    write_demo_dataset(tmp_path / "a", **SMALL, seed=3)
    write_demo_dataset(tmp_path / "b", **SMALL, seed=3)
    # dataset.json names its own directory, so it alone may differ.
    files = {
        run: sorted(p.relative_to(tmp_path / run) for p in (tmp_path / run).rglob("*")
                    if p.is_file() and p.name != "dataset.json")
        for run in ("a", "b")
    }
    assert files["a"] == files["b"] and len(files["a"]) == 3 + 2 * 14  # parquets, images, masks
    for relative in files["a"]:
        assert (tmp_path / "a" / relative).read_bytes() == (tmp_path / "b" / relative).read_bytes(), relative


def test_a_different_seed_gives_different_parquet(tmp_path):
    write_demo_dataset(tmp_path / "a", **SMALL, seed=3)
    write_demo_dataset(tmp_path / "b", **SMALL, seed=4)
    first, second = (parquet_file(tmp_path / run, "train").read_bytes() for run in ("a", "b"))
    assert first != second


def test_parquet_has_the_hugging_face_layout(dataset):
    root, _ = dataset
    image_struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    for split in ("train", "val", "test"):
        file = pq.ParquetFile(parquet_file(root, split))
        schema = file.schema_arrow
        assert schema.field("image").type == image_struct
        assert schema.field("mask").type == image_struct
        assert schema.field("label").type == pa.int64()
        assert max(file.metadata.row_group(g).num_rows for g in range(file.num_row_groups)) <= ROW_GROUP_ROWS
    assert pq.ParquetFile(parquet_file(root, "train")).num_row_groups == 2


def test_class_names_come_back_from_the_huggingface_metadata(dataset):
    root, _ = dataset
    metadata = pq.read_schema(parquet_file(root, "val")).metadata
    features = json.loads(metadata[b"huggingface"])["info"]["features"]
    assert features["label"] == {"names": list(CLASS_NAMES), "_type": "ClassLabel"}
    assert features["image"]["_type"] == features["mask"]["_type"] == "Image"


def test_parquet_rows_decode_to_the_generated_phantoms(dataset):
    root, _ = dataset
    table = pq.read_table(parquet_file(root, "val")).to_pylist()
    images, masks, labels = make_phantoms(6, 28, split_seed(5, "val"))
    for index, row in enumerate(table):
        assert row["image"]["path"] == row["mask"]["path"] == f"val_{index:05d}.png"
        assert np.array_equal(decode(row["image"]["bytes"]), images[index])
        assert np.array_equal(decode(row["mask"]["bytes"]), masks[index].astype(np.uint8) * 255)
        assert row["label"] == labels[index]


def test_folder_tree_matches_the_parquet_labels(dataset):
    root, summary = dataset
    for split in ("train", "val", "test"):
        rows = pq.read_table(parquet_file(root, split), columns=["image", "label"]).to_pylist()
        for label, name in enumerate(CLASS_NAMES):
            expected = sorted(row["image"]["path"] for row in rows if row["label"] == label)
            found = sorted(p.name for p in (root / "folders" / split / name).glob("*.png"))
            assert found == expected, (split, name)
            assert summary["counts"][split][name] == len(expected)
        assert summary["counts"][split]["no_lesion"] == max(summary["counts"][split].values())


def test_masks_match_their_images_and_are_empty_only_without_a_lesion(dataset):
    root, _ = dataset
    for mask_file in (root / "masks" / "val").glob("*/*.png"):
        image_file = root / "folders" / mask_file.relative_to(root / "masks")
        image, mask = decode(image_file.read_bytes()), decode(mask_file.read_bytes())
        assert mask.shape == image.shape == (28, 28)
        assert set(np.unique(mask)) <= {0, 255}
        assert mask.any() == (mask_file.parent.name != "no_lesion")


def test_dataset_json_is_the_summary_plus_its_parameters(dataset):
    root, summary = dataset
    written = json.loads((root / "dataset.json").read_text())
    assert {key: written[key] for key in summary} == summary
    assert written["parameters"] == {"train": ROW_GROUP_ROWS + 4, "val": 6, "test": 5, "size": 28, "seed": 5}
    assert summary["path"] == str(root) and summary["classes"] == list(CLASS_NAMES)


def test_writing_over_an_existing_dataset_is_refused_and_leaves_no_debris(tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(MedrayError, match="not empty"):
        write_demo_dataset(out, **SMALL, seed=1)
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_a_failed_write_leaves_no_dataset_behind(tmp_path, monkeypatch):
    import medray.data.synth as synth

    def fail_on_test_split(root, split, *arrays):
        if split == "test":
            raise OSError("disk full")
        original(root, split, *arrays)

    original = synth._write_split
    monkeypatch.setattr(synth, "_write_split", fail_on_test_split)
    with pytest.raises(OSError):
        write_demo_dataset(tmp_path / "demo", **SMALL, seed=1)
    assert list(tmp_path.iterdir()) == []
