"""Every source layout discovered, decoded and accounted for: folders (salted with bad files),
root/<class> with medray's stratified split, parquet with string labels, binary and path columns."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medray.config import DataConfig, SplitConfig
from medray.data.decode import decode_native
from medray.errors import BadImage
from medray.data.manifest import prepare_source
from medray.data.pipeline import read_split
from medray.data.sources import discover
from medray.errors import MedrayError

from data_factory import folder_config, hf_parquet, image_bytes, salted_folder_tree, scan, write


@pytest.mark.parametrize("mode, format", [(mode, "PNG") for mode in ("L", "LA", "RGB", "RGBA", "P")]
                         + [(mode, "JPEG") for mode in ("L", "RGB", "CMYK")])
def test_every_stored_mode_decodes_to_the_same_gray(mode, format):
    gray = np.full((12, 12), 100, np.uint8)
    pixels, stored = decode_native(image_bytes(gray, mode, format), 10**6, "x")
    assert stored == mode and pixels.shape == (12, 12)
    assert np.abs(pixels.astype(int) - 100).max() <= 3


def test_16_bit_is_scaled_to_8_bit_not_clipped():
    deep = np.array([[0, 1024], [2048, 4095]], np.uint16)
    pixels, mode = decode_native(image_bytes(deep), 10**6, "x")
    assert mode.startswith("I") and pixels.tolist() == [[0, 64], [128, 255]]


def test_bad_bytes_get_a_reason_and_the_file_name():
    for data, reason in ((b"", "empty file"), (b"plain text", "not an image"),
                         (image_bytes(scan(1))[:200], "corrupt or truncated")):
        with pytest.raises(BadImage, match="scan.png: ") as error:
            decode_native(data, 10**6, "scan.png")
        assert error.value.reason == reason


def test_salted_folders_ignore_and_count_files_that_are_not_images(tmp_path):
    salt = salted_folder_tree(tmp_path)
    source = discover(folder_config(tmp_path))
    assert source.class_names == ["NORMAL", "PNEUMONIA"]
    assert sorted(source.ignored_files) == sorted(str(path) for path in salt["ignored"])
    # every image-named file is a row, bad or not: 16 + 2 good extras + 4 bad
    assert sum(source.num_rows(split) for split in ("train", "val", "test")) == 22


def test_salted_folders_stop_at_a_bad_file_by_default_naming_it(tmp_path, ray_cluster):
    salt = salted_folder_tree(tmp_path)
    with pytest.raises(MedrayError, match="on_bad_image: skip") as error:
        prepare_source(discover(folder_config(tmp_path)), folder_config(tmp_path), tmp_path / "run")
    assert any(str(path) in str(error.value) for path in salt["bad"].values())
    assert "4 unusable rows in all" in str(error.value)


def test_salted_folders_in_skip_mode_count_every_row(tmp_path, ray_cluster):
    salt = salted_folder_tree(tmp_path / "data")
    config = folder_config(tmp_path / "data", on_bad_image="skip")
    source, report = prepare_source(discover(config), config, tmp_path / "run")
    assert report["rows_in"] == 22 and report["rows_used"] == 18 and report["rows_reported"] == 4
    assert report["rows_in"] == report["rows_used"] + report["rows_reported"]
    assert report["reported_by_reason"] == {reason: 1 for reason in salt["bad"]}
    assert {row["source"] for row in report["reported_rows"]} == {str(path) for path in salt["bad"].values()}
    assert report["ignored_files"]["count"] == 3
    rows = read_split(source, "train", 16, config).take_all()  # decoded in Ray workers: no bad row left
    assert len(rows) == source.num_rows("train") == 10  # 8 + deep16 + colour
    deep = next(row for row in rows if row["row_id"].endswith("deep16.png"))
    assert deep["pixels"].min() == 0 and deep["pixels"].max() == 255


def test_unknown_class_folder_stops_or_is_skipped_and_counted(tmp_path):
    salted_folder_tree(tmp_path)
    stray = write(tmp_path / "train" / "OTHER" / "1.png", image_bytes(scan(7)))
    with pytest.raises(MedrayError, match=f"{stray}: label 'OTHER' is not a known class"):
        discover(folder_config(tmp_path, class_names=["NORMAL", "PNEUMONIA"]))
    source = discover(folder_config(tmp_path, class_names=["NORMAL", "PNEUMONIA"], on_bad_image="skip"))
    assert [(row["source"], row["status"]) for row in source.rejected] == [(str(stray), "unknown label")]


def class_folders(root, counts: dict[str, int]):
    seed = 100
    for class_name, count in counts.items():
        for index in range(count):
            seed += 1
            write(root / class_name / f"{index:03d}.png", image_bytes(scan(seed)))


def test_class_folders_without_splits_get_a_stratified_split_fixed_by_seed(tmp_path):
    class_folders(tmp_path, {"glioma": 40, "meningioma": 20, "no_tumor": 60})
    first = discover(DataConfig(path=tmp_path, source="folders"))
    again = discover(DataConfig(path=tmp_path, source="folders"))
    other = discover(DataConfig(path=tmp_path, source="folders", split=SplitConfig(seed=1)))
    assert first.class_counts == {"train": [28, 14, 42], "val": [6, 3, 9], "test": [6, 3, 9]}
    ids = {split: {row for piece in first.pieces[split] for row in piece["row_ids"]} for split in first.pieces}
    assert ids == {split: {row for piece in again.pieces[split] for row in piece["row_ids"]} for split in ids}
    assert ids["val"] != {row for piece in other.pieces["val"] for row in piece["row_ids"]}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    assert sum(len(rows) for rows in ids.values()) == 120


def test_split_fractions_must_add_up_to_one():
    with pytest.raises(ValueError, match="must add up to 1"):
        SplitConfig(train=0.8, val=0.15, test=0.15)


def three_splits(folder, write_split, per_split=6):
    for offset, split in enumerate(("train", "val", "test")):
        write_split(folder / f"{split}-00000-of-00001.parquet", [scan(10 * offset + i) for i in range(per_split)])


def test_parquet_string_labels_name_their_classes(tmp_path):
    three_splits(tmp_path, lambda path, scans: hf_parquet(
        path, [image_bytes(s) for s in scans], ["virus", "bacteria", "normal"] * 2))
    assert discover(DataConfig(path=tmp_path)).class_names == ["bacteria", "normal", "virus"]
    ordered = discover(DataConfig(path=tmp_path, class_names=["normal", "bacteria", "virus"]))
    assert ordered.class_counts["train"] == [2, 2, 2] and ordered.pieces["train"][0]["labels"][:3] == [2, 1, 0]
    with pytest.raises(MedrayError, match=r"row 2: label 'normal' is not a known class"):
        discover(DataConfig(path=tmp_path, class_names=["bacteria", "virus"]))


def test_parquet_binary_column_path_column_and_glob_read_the_same_pixels(tmp_path, ray_cluster):
    scans = [scan(i) for i in range(6)]
    for split in ("train", "val", "test"):
        hf_parquet(tmp_path / "struct" / f"{split}-0.parquet", [image_bytes(s) for s in scans], [0, 1] * 3, ["a", "b"])
        hf_parquet(tmp_path / "binary" / f"{split}-0.parquet", [image_bytes(s) for s in scans], [0, 1] * 3,
                   binary=True)
        names = [write(tmp_path / "linked" / "images" / f"{split}{i}.png", image_bytes(s)).name
                 for i, s in enumerate(scans)]
        pq.write_table(pa.table({"file": [f"images/{name}" for name in names], "label": ["a", "b"] * 3}),
                       tmp_path / "linked" / f"{split}-0.parquet")
    configs = [DataConfig(path=tmp_path / "struct"), DataConfig(path=tmp_path / "binary", class_names=["a", "b"]),
               DataConfig(path=tmp_path / "linked", path_column="file"),
               DataConfig(path=str(tmp_path / "*" / "test-0.parquet").replace("*", "str*"))]
    pixels = []
    for config in configs[:3]:
        source = discover(config)
        assert source.class_names == ["a", "b"]
        rows = read_split(source, "test", 16, config).take_all()
        pixels.append(sorted((row["label"], row["pixels"].tobytes()) for row in rows))
    assert pixels[0] == pixels[1] == pixels[2] and len(pixels[0]) == 6
    with pytest.raises(MedrayError, match="the train split has no images"):  # the glob found only test files
        discover(configs[3])


def test_parquet_path_column_pointing_nowhere_is_reported_by_row(tmp_path, ray_cluster):
    for split in ("train", "val", "test"):
        names = [write(tmp_path / f"{split}{i}.png", image_bytes(scan(i))).name for i in range(4)]
        names[1] = "gone.png" if split == "val" else names[1]
        pq.write_table(pa.table({"file": names, "label": [0, 1, 0, 1]}), tmp_path / f"{split}-0.parquet")
    config = DataConfig(path=tmp_path, path_column="file", on_bad_image="skip")
    source, report = prepare_source(discover(config), config, tmp_path / "run")
    assert report["reported_by_reason"] == {"missing file": 1} and source.num_rows("val") == 3
    assert report["reported_rows"][0]["source"] == f"{tmp_path / 'val-0.parquet'} row 1"


def test_hugging_face_image_structs_read_bytes_or_the_file_beside_the_parquet(tmp_path, ray_cluster):
    """Rows as `datasets` writes them: bytes, or bytes null and a path (relative or absolute)."""
    scans = [scan(10 + i) for i in range(4)]
    absolute = write(tmp_path / "elsewhere" / "absolute.png", image_bytes(scans[2]))
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    for split in ("train", "val", "test"):
        write(tmp_path / "data" / "images" / f"{split}-relative.png", image_bytes(scans[1]))
        cells = [{"bytes": image_bytes(scans[0]), "path": "ignored-when-bytes-are-there.png"},
                 {"bytes": None, "path": f"images/{split}-relative.png"},
                 {"bytes": None, "path": str(absolute)},
                 {"bytes": None, "path": "images/gone.png"},
                 {"bytes": None, "path": None},
                 {"bytes": image_bytes(scans[3]), "path": None}]
        pq.write_table(pa.table({"image": pa.array(cells, struct), "label": [0, 1, 0, 1, 0, 1]}),
                       tmp_path / "data" / f"{split}-0.parquet")
    config = DataConfig(path=tmp_path / "data", on_bad_image="skip")
    source, report = prepare_source(discover(config), config, tmp_path / "run")
    assert report["reported_by_reason"] == {"missing file": 3, "no image": 3}
    test_file = tmp_path / "data" / "test-0.parquet"
    reasons = {row["source"]: row["status"] for row in report["reported_rows"]}
    assert reasons[f"{test_file} row 3"] == "missing file" and reasons[f"{test_file} row 4"] == "no image"
    messages = {row["source"]: row["message"] for row in report["reported_rows"]}
    assert "images/gone.png" in messages[f"{test_file} row 3"]
    assert "neither bytes nor a path" in messages[f"{test_file} row 4"]
    rows = sorted(read_split(source, "test", 16, config).take_all(), key=lambda row: row["row_id"])
    assert [row["row_id"] for row in rows] == [f"test-0.parquet#{n}" for n in (0, 1, 2, 5)]
    for row, expected in zip(rows, (scans[0], scans[1], scans[2], scans[3])):
        assert np.array_equal(row["pixels"], expected)


def test_a_label_differing_only_in_spaces_or_case_is_reported_by_value_and_row(tmp_path):
    labels = {"train": ["NORMAL", "PNEUMONIA"] * 3, "val": ["NORMAL", "PNEUMONIA", "PNEUMONIA "] * 2,
              "test": ["NORMAL", "PNEUMONIA"] * 3}
    for offset, split in enumerate(("train", "val", "test")):
        hf_parquet(tmp_path / f"{split}-00000-of-00001.parquet",
                   [image_bytes(scan(10 * offset + i)) for i in range(6)], labels[split])
    with pytest.raises(MedrayError) as raised:
        discover(DataConfig(path=tmp_path))
    message = str(raised.value)
    assert "\n" not in message and "'PNEUMONIA '" in message and "'PNEUMONIA'" in message
    assert f"{tmp_path / 'val-00000-of-00001.parquet'} row 2" in message


def test_a_class_only_in_validation_or_test_stops_naming_the_class_and_split(tmp_path):
    salted_folder_tree(tmp_path)
    write(tmp_path / "test" / "COVID" / "1.png", image_bytes(scan(7)))
    with pytest.raises(MedrayError, match=r"^[^\n]*class 'COVID' has 1 test image but no train image[^\n]*$"):
        discover(folder_config(tmp_path))
