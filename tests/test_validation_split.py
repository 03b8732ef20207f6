"""A validation split too small to pick a model by is warned about, or carved out of train."""

import numpy as np

from medray.config import DataConfig, SplitConfig
from medray.data.sources import discover
from medray.data.validation import small_validation_warnings

from data_factory import hf_parquet, image_bytes, scan


def dataset(root, train_labels, val_labels):
    """Parquet splits with these labels; images are distinct per row."""
    for split, labels in (("train", train_labels), ("val", val_labels), ("test", [0, 1, 0, 1])):
        hf_parquet(root / f"{split}-0.parquet", [image_bytes(scan(i)) for i in range(len(labels))], labels,
                   ["normal", "pneumonia"])
    return root


def test_a_class_with_too_few_validation_images_is_named_with_its_count(tmp_path):
    source = discover(DataConfig(path=dataset(tmp_path, [0, 1] * 20, [0, 0, 0, 1])))
    warnings = small_validation_warnings(source, minimum=3)
    assert len(warnings) == 1
    assert warnings[0].startswith("validation split: class pneumonia has 1 image (fewer than "
                                  "data.min_val_per_class=3)")
    assert "data.split.val_from_train" in warnings[0]
    assert small_validation_warnings(source, minimum=1) == []


def test_val_from_train_carves_a_stratified_seeded_split_out_of_train(tmp_path):
    root = dataset(tmp_path, [0] * 30 + [1] * 10, [0, 1])
    carved = discover(DataConfig(path=root, split=SplitConfig(val_from_train=0.2, seed=7)))
    assert carved.class_counts["val"] == [6, 2] and carved.class_counts["train"] == [24, 8]
    val_ids = [row_id for piece in carved.pieces["val"] for row_id in piece["row_ids"]]
    train_ids = [row_id for piece in carved.pieces["train"] for row_id in piece["row_ids"]]
    assert not set(val_ids) & set(train_ids) and len(set(val_ids) | set(train_ids)) == 40
    assert all(row_id.startswith("train-0.parquet#") for row_id in val_ids)  # the dataset's own val is unused
    assert all(piece["split"] == "val" for piece in carved.pieces["val"])
    again = discover(DataConfig(path=root, split=SplitConfig(val_from_train=0.2, seed=7)))
    other = discover(DataConfig(path=root, split=SplitConfig(val_from_train=0.2, seed=8)))
    assert [p["row_ids"] for p in again.pieces["val"]] == [p["row_ids"] for p in carved.pieces["val"]]
    assert sorted(val_ids) != sorted(row_id for piece in other.pieces["val"] for row_id in piece["row_ids"])
    labels = {row_id: label for piece in carved.pieces["val"] for row_id, label in zip(piece["row_ids"], piece["labels"])}
    assert all(labels[row_id] == int(np.asarray([0] * 30 + [1] * 10)[int(row_id.split("#")[1])]) for row_id in val_ids)


def test_val_from_train_reports_the_dataset_validation_rows_it_leaves_out(tmp_path, ray_cluster):
    from medray.data.manifest import describe_data_report, prepare_source

    config = DataConfig(path=dataset(tmp_path / "data", [0, 1] * 10, [0, 1, 1]), split=SplitConfig(val_from_train=0.2))
    _, report = prepare_source(discover(config), config, tmp_path / "run")
    assert report["discarded_validation"]["count"] == 3
    assert "data.split.val_from_train" in report["discarded_validation"]["reason"]
    assert report["rows_in"] == 24  # 20 train (16 + 4 carved) and 4 test; the 3 validation rows are not read
    lines = [line for line in describe_data_report(report).splitlines() if "own validation split" in line]
    assert lines == ["data: 3 rows of the dataset's own validation split not used (data.split.val_from_train "
                     "carves validation out of train)"]
