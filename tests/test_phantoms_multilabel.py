"""The multi-label demo phantoms: a bright and a dark lesion, each present or not, masks per lesion,
written as Hugging Face parquet and a MedMNIST multi-label .npz; the single-label phantoms as before."""

import hashlib
import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from scipy import ndimage

from medray.cli import main
from medray.data.phantoms import (
    COMBINATIONS,
    LABEL_NAMES,
    LESION_SEPARATION,
    draw_lesions,
    make_multilabel_phantoms,
    make_phantoms,
)
from medray.data.synth import ROW_GROUP_ROWS, split_seed, write_multilabel_dataset

BRIGHT, DARK = LABEL_NAMES
IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def decode(png_bytes):
    return np.asarray(Image.open(io.BytesIO(png_bytes)))


def surrounding_tissue(mask, brain):
    """Brain pixels 2-3 pixels outside a lesion mask: past its soft edge, still close by."""
    near = ndimage.binary_dilation(mask, iterations=3)
    return near & ~ndimage.binary_dilation(mask, iterations=1) & brain


def test_single_label_phantoms_are_the_ones_drawn_before_multi_label_existed():
    # sha256 of make_phantoms(12, 32, seed=0) as produced by phantoms.py at commit a091952,
    # before the lesion drawing was shared with the multi-label phantoms.
    digest = hashlib.sha256()
    for array in make_phantoms(12, 32, seed=0):
        digest.update(np.ascontiguousarray(array).tobytes())
    assert digest.hexdigest() == "6a1d354f45069fe7981246be4d216cb9ccc51f75c5e3af9aef407e2a92f10a4a"


def test_every_combination_of_findings_occurs_and_each_label_in_about_three_eighths():
    _, _, labels = make_multilabel_phantoms(64, 28, seed=0)
    assert labels.shape == (64, 2) and labels.dtype == np.uint8
    found = {tuple(row) for row in labels.tolist()}
    assert found == set(COMBINATIONS) == {(0, 0), (1, 0), (0, 1), (1, 1)}
    assert np.all((labels.mean(axis=0) > 0.3) & (labels.mean(axis=0) < 0.45))


@pytest.mark.parametrize("n", [4, 5, 7])
def test_from_four_images_on_no_combination_is_missing(n):
    _, _, labels = make_multilabel_phantoms(n, 28, seed=n)
    assert {tuple(row) for row in labels.tolist()} == set(COMBINATIONS)


def test_labels_come_shuffled_not_grouped_by_combination():
    _, _, labels = make_multilabel_phantoms(40, 28, seed=0)
    codes = labels[:, 0] + 2 * labels[:, 1]
    assert (np.diff(codes.astype(int)) < 0).any()


@pytest.mark.parametrize("size", [28, 64])
def test_a_mask_is_nonempty_exactly_where_its_label_is_present(size):
    images, masks, labels = make_multilabel_phantoms(24, size, seed=2)
    assert images.shape == (24, size, size) and images.dtype == np.uint8
    assert masks.shape == (24, 2, size, size) and masks.dtype == bool
    assert np.array_equal(masks.any(axis=(2, 3)), labels.astype(bool))


@pytest.mark.parametrize("size", [28, 64])
def test_two_lesions_on_one_slice_lie_apart(size):
    _, masks, labels = make_multilabel_phantoms(40, size, seed=3)
    both = np.flatnonzero(labels.all(axis=1))
    assert both.size
    for index in both:
        bright, dark = masks[index]
        assert not (bright & dark).any()
        assert ndimage.distance_transform_edt(~bright)[dark].min() > 2, index


def test_with_room_to_spare_the_second_lesion_keeps_the_separation_from_the_first():
    rng = np.random.default_rng(4)
    for _ in range(6):
        phantom = draw_lesions(rng, [BRIGHT, DARK], 64)
        gap = ndimage.distance_transform_edt(~phantom.lesions[BRIGHT])[phantom.lesions[DARK]].min()
        # The masks sit inside the lesions' faint edges, so the gap between them is wider still.
        assert gap > LESION_SEPARATION * 64


@pytest.mark.parametrize("kinds", [[BRIGHT], [DARK], [BRIGHT, DARK], [DARK, BRIGHT]])
def test_bright_lesion_is_brighter_and_dark_lesion_darker_than_the_brain_around_it(kinds):
    rng = np.random.default_rng(5)
    for _ in range(6):
        phantom = draw_lesions(rng, kinds, 64)
        assert set(phantom.lesions) == set(kinds)
        assert np.array_equal(phantom.lesion, np.logical_or.reduce(list(phantom.lesions.values())))
        for kind, mask in phantom.lesions.items():
            assert mask.any() and not (ndimage.binary_dilation(mask) & ~phantom.brain).any()
            inside = phantom.image[mask].mean()
            around = phantom.image[surrounding_tissue(mask, phantom.brain)].mean()
            if kind == BRIGHT:
                assert inside > around + 30, (kind, inside, around)
            else:
                assert inside < around - 30, (kind, inside, around)


def test_no_lesion_kinds_gives_an_empty_mask_and_unknown_kinds_are_refused():
    rng = np.random.default_rng(6)
    phantom = draw_lesions(rng, [], 32)
    assert phantom.lesions == {} and not phantom.lesion.any()
    with pytest.raises(ValueError, match="kinds"):
        draw_lesions(rng, ["grey_lesion"], 32)
    with pytest.raises(ValueError, match="kinds"):
        draw_lesions(rng, [BRIGHT, BRIGHT], 32)


def test_same_seed_gives_identical_multilabel_phantoms():
    first, second = make_multilabel_phantoms(8, 32, seed=9), make_multilabel_phantoms(8, 32, seed=9)
    for a, b in zip(first, second):
        assert np.array_equal(a, b)


# --- the written dataset -------------------------------------------------------------------------

SPLITS = {"train": ROW_GROUP_ROWS + 4, "val": 8, "test": 6}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    # More train rows than a row group holds, so the row-group limit is exercised.
    out = tmp_path_factory.mktemp("multilabel") / "phantoms"
    summary = write_multilabel_dataset(out, **SPLITS, size=28, seed=5)
    return out, summary


def parquet_file(root, split):
    return root / "parquet" / f"{split}-00000-of-00001.parquet"


def test_parquet_has_the_multilabel_hugging_face_layout(dataset):
    root, _ = dataset
    for split in SPLITS:
        file = pq.ParquetFile(parquet_file(root, split))
        schema = file.schema_arrow
        assert schema.names == ["image", "labels", "mask_bright_round_lesion", "mask_dark_irregular_lesion"]
        assert schema.field("labels").type == pa.list_(pa.string())
        for column in ("image", "mask_bright_round_lesion", "mask_dark_irregular_lesion"):
            assert schema.field(column).type == IMAGE_STRUCT
        assert file.metadata.num_rows == SPLITS[split]
        assert max(file.metadata.row_group(g).num_rows for g in range(file.num_row_groups)) <= ROW_GROUP_ROWS


def test_label_names_come_back_from_the_huggingface_metadata_as_a_sequence_of_classlabel(dataset):
    root, _ = dataset
    features = json.loads(pq.read_schema(parquet_file(root, "val")).metadata[b"huggingface"])["info"]["features"]
    assert features["labels"] == {"feature": {"names": [BRIGHT, DARK], "_type": "ClassLabel"}, "_type": "Sequence"}
    for column in ("image", "mask_bright_round_lesion", "mask_dark_irregular_lesion"):
        assert features[column] == {"_type": "Image"}


def test_parquet_rows_decode_to_the_generated_phantoms(dataset):
    root, _ = dataset
    rows = pq.read_table(parquet_file(root, "val")).to_pylist()
    images, masks, labels = make_multilabel_phantoms(SPLITS["val"], 28, split_seed(5, "val"))
    for index, row in enumerate(rows):
        assert row["image"]["path"] == f"val_{index:05d}.png"
        assert np.array_equal(decode(row["image"]["bytes"]), images[index])
        assert row["labels"] == [name for name, bit in zip(LABEL_NAMES, labels[index]) if bit]
        for k, name in enumerate(LABEL_NAMES):
            assert np.array_equal(decode(row[f"mask_{name}"]["bytes"]), masks[index, k].astype(np.uint8) * 255)


def test_parquet_masks_are_0_or_255_and_empty_exactly_where_the_label_is_absent(dataset):
    root, _ = dataset
    combinations = set()
    for row in pq.read_table(parquet_file(root, "train")).to_pylist():
        combinations.add(tuple(row["labels"]))
        for name in LABEL_NAMES:
            mask = decode(row[f"mask_{name}"]["bytes"])
            assert mask.shape == (28, 28) and set(np.unique(mask)) <= {0, 255}
            assert mask.any() == (name in row["labels"])
    assert combinations == {(), (BRIGHT,), (DARK,), (BRIGHT, DARK)}


def test_npz_holds_the_same_images_in_the_medmnist_multilabel_layout(dataset):
    root, _ = dataset
    with np.load(root / "npz" / "multilabel.npz", allow_pickle=False) as arrays:
        assert sorted(arrays.files) == sorted(f"{split}_{part}" for split in SPLITS for part in ("images", "labels"))
        for split, rows in SPLITS.items():
            images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
            assert images.shape == (rows, 28, 28) and images.dtype == np.uint8
            assert labels.shape == (rows, 2) and labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1}
            table = pq.read_table(parquet_file(root, split)).to_pylist()
            assert np.array_equal(images[0], decode(table[0]["image"]["bytes"]))
            assert labels.tolist() == [[int(name in row["labels"]) for name in LABEL_NAMES] for row in table]


def test_dataset_json_counts_each_label_and_each_combination(dataset):
    root, summary = dataset
    written = json.loads((root / "dataset.json").read_text())
    assert {key: written[key] for key in summary} == summary
    assert written["parameters"] == {"task": "multi_label", **SPLITS, "size": 28, "seed": 5}
    assert summary["labels"] == [BRIGHT, DARK] and summary["task"] == "multi_label"
    for split in SPLITS:
        rows = pq.read_table(parquet_file(root, split), columns=["labels"]).column("labels").to_pylist()
        assert summary["counts"][split] == {name: sum(name in row for row in rows) for name in LABEL_NAMES}
        assert summary["combinations"][split] == {
            "no_finding": sum(row == [] for row in rows),
            BRIGHT: sum(row == [BRIGHT] for row in rows),
            DARK: sum(row == [DARK] for row in rows),
            f"{BRIGHT}|{DARK}": sum(row == [BRIGHT, DARK] for row in rows),
        }
        assert sum(summary["combinations"][split].values()) == SPLITS[split]


def test_the_same_command_again_reuses_the_dataset_but_a_single_label_one_is_refused(dataset, capsys):
    root, summary = dataset
    assert write_multilabel_dataset(root, **SPLITS, size=28, seed=5) == summary
    sizes = [f"--{split}={rows}" for split, rows in SPLITS.items()]
    assert main(["data", "synth", "--out", str(root), *sizes, "--size", "28", "--seed", "5"]) == 2
    assert "not empty" in capsys.readouterr().err


def test_cli_writes_multilabel_phantoms_and_refuses_a_second_scanner(tmp_path, capsys):
    out = tmp_path / "data"
    args = ["data", "synth", "--task", "multi_label", "--out", str(out), "--train", "4", "--val", "4",
            "--test", "4", "--size", "28"]
    assert main([*args, "--second-scanner", "no_lesion"]) == 2
    assert "--second-scanner" in capsys.readouterr().err and not out.exists()
    assert main(args) == 0
    assert "no_finding 1" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "npz", "parquet"]
    assert main([*args[:-8], "--train", "3", "--val", "4", "--test", "4", "--size", "28"]) == 2
    assert "at least 4 images" in capsys.readouterr().err
