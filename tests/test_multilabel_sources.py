"""Multi-label data in every layout medray reads (issue 28): label vectors of K values (1 present,
0 absent, -1 unknown) from MedMNIST-style .npz, Hugging Face parquet (names or multi-hot), and CSV
listings in the ChestX-ray14 and CheXpert layouts; bad labels stop discovery in one line."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medray.config import DataConfig, validate_config
from medray.data.decode import decode_row
from medray.data.manifest import scan_rows, usable_pieces, usable_source
from medray.data.inspect import quality_report
from medray.data.pipeline import read_split, training_data
from medray.data.sources import discover, get_source_kind
from medray.data.sources.base import reader_settings
from medray.data.sources.splits import carve_validation
from medray.errors import BadImage, MedrayError
from medray.models.registry import get_backbone

from data_factory import image_bytes, scan, write

FINDINGS = ["Effusion", "Mass", "Nodule"]


def labels_by_row(source, split) -> dict[str, list[int]]:
    return {row_id: list(label) for piece in source.pieces[split]
            for row_id, label in zip(piece["row_ids"], piece["labels"])}


# --- MedMNIST .npz -------------------------------------------------------------------------------

def chest_npz(path, labels_per_split: dict[str, np.ndarray]):
    arrays = {}
    for index, (split, labels) in enumerate(labels_per_split.items()):
        arrays[f"{split}_images"] = np.stack([scan(index * 100 + n) for n in range(len(labels))])
        arrays[f"{split}_labels"] = np.asarray(labels, np.uint8)
    np.savez(path, **arrays)
    return path


NPZ_LABELS = {"train": [[1, 0, 0], [0, 1, 1], [0, 0, 0], [1, 1, 1]], "val": [[0, 1, 0], [1, 0, 0]],
              "test": [[0, 0, 1], [0, 0, 0]]}


def test_npz_labels_of_shape_n_by_k_are_k_labels_per_image(tmp_path):
    path = chest_npz(tmp_path / "chest.npz", NPZ_LABELS)
    source = discover(DataConfig(path=path, source="npz", class_names=FINDINGS))
    assert source.multi_label and source.class_names == FINDINGS
    assert list(labels_by_row(source, "train").values()) == NPZ_LABELS["train"]
    assert source.class_counts["train"] == [2, 2, 2]  # images with each finding, not images
    assert source.num_rows("train") == 4 and source.num_rows("test") == 2
    assert discover(DataConfig(path=path, source="npz")).class_names == ["label_0", "label_1", "label_2"]


def test_npz_labels_of_shape_n_by_1_stay_single_label(tmp_path):
    path = chest_npz(tmp_path / "pneumonia.npz", {"train": [[0], [1], [1]], "val": [[0], [1]], "test": [[1], [0]]})
    source = discover(DataConfig(path=path, source="npz"))
    assert not source.multi_label and source.class_counts["train"] == [1, 2]


def test_npz_label_value_2_stops_discovery_in_one_line_naming_file_and_row(tmp_path):
    labels = {**NPZ_LABELS, "val": [[0, 1, 0], [1, 2, 0]]}
    path = chest_npz(tmp_path / "chest.npz", labels)
    with pytest.raises(MedrayError) as caught:
        discover(DataConfig(path=path, source="npz", class_names=FINDINGS))
    message = str(caught.value)
    assert message.startswith(f"{path} val row 1: label value 2 is not 1 (present), 0 (absent) or -1")
    assert "\n" not in message


def test_npz_class_names_of_another_length_are_refused(tmp_path):
    path = chest_npz(tmp_path / "chest.npz", NPZ_LABELS)
    with pytest.raises(MedrayError, match="hold 3 labels per image but data.class_names lists 2"):
        discover(DataConfig(path=path, source="npz", class_names=["Effusion", "Mass"]))


# --- Hugging Face parquet -----------------------------------------------------------------------

def write_labels_parquet(folder, labels_per_split: dict[str, list], arrow_type, features: dict | None = None,
                         extra_columns: dict | None = None):
    """One <split>-00000-of-00001.parquet per split: image struct, `labels` column, extra columns."""
    for index, (split, labels) in enumerate(labels_per_split.items()):
        images = [{"bytes": image_bytes(scan(index * 100 + n)), "path": f"{split}_{n}.png"}
                  for n in range(len(labels))]
        columns = {"image": images, "labels": pa.array(labels, arrow_type)}
        columns |= {name: values(split, len(labels)) for name, values in (extra_columns or {}).items()}
        table = pa.table(columns)
        if features is not None:
            table = table.replace_schema_metadata({b"huggingface": json.dumps({"info": {"features": features}}).encode()})
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / f"{split}-00000-of-00001.parquet", row_group_size=2)
    return folder


NAMED = {"train": [["Mass"], ["Effusion", "Nodule"], [], ["Nodule"]], "val": [["Mass"], []],
         "test": [["Effusion"], ["Mass", "Effusion"]]}
# Not alphabetical: the metadata's order is the vector's order.
SCHEMA_ORDER = ["Nodule", "Mass", "Effusion"]


@pytest.mark.parametrize("feature_type", ["Sequence", "List"])
def test_parquet_list_of_names_takes_names_and_order_from_hugging_face_metadata(tmp_path, feature_type):
    features = {"image": {"_type": "Image"},
                "labels": {"_type": feature_type, "feature": {"_type": "ClassLabel", "names": SCHEMA_ORDER}}}
    folder = write_labels_parquet(tmp_path / "parquet", NAMED, pa.list_(pa.string()), features)
    source = discover(DataConfig(path=folder, label_column="labels", mask_column=None))
    assert source.multi_label and source.class_names == SCHEMA_ORDER
    assert list(labels_by_row(source, "train").values()) == [[0, 1, 0], [1, 0, 1], [0, 0, 0], [1, 0, 0]]
    assert source.class_counts["train"] == [2, 1, 1]


def test_parquet_list_of_names_takes_names_from_the_config_without_metadata(tmp_path):
    folder = write_labels_parquet(tmp_path / "parquet", NAMED, pa.list_(pa.string()))
    source = discover(DataConfig(path=folder, label_column="labels", mask_column=None,
                                 class_names=["Mass", "Nodule", "Effusion"]))
    assert source.class_names == ["Mass", "Nodule", "Effusion"]
    assert list(labels_by_row(source, "test").values()) == [[0, 0, 1], [1, 0, 1]]
    # Without either, the names seen, sorted.
    assert discover(DataConfig(path=folder, label_column="labels", mask_column=None)).class_names == FINDINGS


def test_parquet_multi_hot_column_keeps_unknown_entries_under_ignore(tmp_path):
    multi_hot = {"train": [[1, 0, -1], [0, 1, 1], [1, 1, 0]], "val": [[0, 1, 0]], "test": [[1, 0, 0]]}
    folder = write_labels_parquet(tmp_path / "parquet", multi_hot, pa.list_(pa.int8()))
    source = discover(DataConfig(path=folder, label_column="labels", mask_column=None, class_names=FINDINGS))
    assert source.multi_label
    assert list(labels_by_row(source, "train").values()) == multi_hot["train"]
    assert source.class_counts["train"] == [2, 2, 1]  # -1 is not a positive
    names = discover(DataConfig(path=folder, label_column="labels", mask_column=None)).class_names
    assert names == ["label_0", "label_1", "label_2"]


def test_parquet_unknown_label_name_stops_discovery_in_one_line_naming_file_and_row(tmp_path):
    named = {**NAMED, "train": [["Mass"], ["Pneumonai"], ["Effusion"], ["Nodule"]]}
    folder = write_labels_parquet(tmp_path / "parquet", named, pa.list_(pa.string()))
    config = DataConfig(path=folder, label_column="labels", mask_column=None, class_names=FINDINGS)
    with pytest.raises(MedrayError) as caught:
        discover(config)
    message = str(caught.value)
    assert message.startswith(f"{folder / 'train-00000-of-00001.parquet'} row 1: label name 'Pneumonai' is not "
                              "one of the labels (Effusion, Mass, Nodule)")
    assert "\n" not in message
    skipped = discover(config.model_copy(update={"on_bad_image": "skip"}))
    assert skipped.num_rows("train") == 3
    assert [(row["row_id"], row["status"]) for row in skipped.rejected] == [
        ("train-00000-of-00001.parquet#1", "unknown label")]


def test_a_label_without_a_positive_train_image_is_named(tmp_path):
    named = {**NAMED, "train": [["Mass"], ["Effusion"], []]}
    folder = write_labels_parquet(tmp_path / "parquet", named, pa.list_(pa.string()))
    with pytest.raises(MedrayError, match="no train image has label Nodule; a label without positive examples"):
        discover(DataConfig(path=folder, label_column="labels", mask_column=None, class_names=FINDINGS))


def test_validation_carved_from_multi_label_train_is_a_seeded_share_of_its_rows(tmp_path):
    labels = {"train": [[n % 2, (n // 2) % 2, int(n % 3 == 0)] for n in range(20)], "val": [[1, 0, 0]],
              "test": [[0, 1, 0]]}
    path = chest_npz(tmp_path / "chest.npz", labels)
    source = discover(DataConfig(path=path, source="npz", class_names=FINDINGS))
    carved = carve_validation(source, 0.25, seed=3)
    train, val = labels_by_row(carved, "train"), labels_by_row(carved, "val")
    assert len(val) == 5 and len(train) == 15 and not set(train) & set(val)
    assert {**train, **val} == labels_by_row(source, "train")
    assert labels_by_row(carve_validation(source, 0.25, seed=3), "val") == val
    assert carved.class_counts["val"] == np.asarray(list(val.values())).sum(axis=0).tolist()


# --- CSV listings -------------------------------------------------------------------------------

def chestxray14(root, patients: int = 12, per_patient: int = 3):
    """Data_Entry_2017.csv's layout: Image Index, Finding Labels (joined by |), Patient ID; images/."""
    lines, expected = ["Image Index,Finding Labels,Follow-up #,Patient ID"], {}
    findings = ["No Finding", "Effusion", "Mass|Effusion", "Nodule", "Effusion|Nodule|Mass"]
    for patient in range(patients):
        for follow_up in range(per_patient):
            name = f"{patient:08d}_{follow_up:03d}.png"
            finding = findings[(patient + follow_up) % len(findings)]
            write(root / "images" / name, image_bytes(scan(patient * 10 + follow_up)))
            lines.append(f"{name},{finding},{follow_up},{patient}")
            expected[name] = [int(label in finding.split("|")) for label in FINDINGS]
    (root / "Data_Entry_2017.csv").write_text("\n".join(lines) + "\n")
    return root / "Data_Entry_2017.csv", expected


def chestxray14_config(csv_path, **overrides):
    return DataConfig(**{"path": csv_path, "source": "csv", "image_column": "Image Index",
                         "label_column": "Finding Labels", "image_folder": "images", "patient_column": "Patient ID",
                         "mask_column": None, **overrides})


def test_chestxray14_csv_gives_label_vectors_and_keeps_every_patient_in_one_split(tmp_path):
    csv_path, expected = chestxray14(tmp_path)
    source = discover(chestxray14_config(csv_path))
    assert source.multi_label and source.class_names == FINDINGS
    rows = {split: labels_by_row(source, split) for split in ("train", "val", "test")}
    assert {row_id: label for split in rows.values() for row_id, label in split.items()} == expected
    patient_splits = {}
    for split, labels in rows.items():
        for row_id in labels:
            patient_splits.setdefault(row_id.split("_")[0], set()).add(split)
    assert len(patient_splits) == 12 and all(len(splits) == 1 for splits in patient_splits.values())
    assert all(rows[split] for split in rows)  # 12 patients at 0.7 / 0.15 / 0.15: every split has some


def test_a_csv_split_column_that_puts_a_patient_in_two_splits_is_refused(tmp_path):
    csv_path = tmp_path / "listing.csv"
    csv_path.write_text("Image Index,Finding Labels,Patient ID,split\na.png,Mass,7,train\nb.png,No Finding,7,test\n")
    with pytest.raises(MedrayError, match=r"line 3: patient '7' is in the test split and \(line 2\) in train"):
        discover(chestxray14_config(csv_path, split_column="split", image_folder=None))


def test_csv_rows_read_their_image_and_a_missing_file_names_the_csv_line_and_path(tmp_path):
    csv_path, _ = chestxray14(tmp_path, patients=6, per_patient=2)
    config = chestxray14_config(csv_path)
    source = discover(config)
    piece = source.pieces["train"][0]
    settings = reader_settings(source, config)
    row = next(get_source_kind("csv").rows(piece, settings))
    assert decode_row(row, config.max_image_pixels)[0].shape == (16, 16)
    missing = tmp_path / "images" / piece["row_ids"][0]
    missing.unlink()
    row = next(get_source_kind("csv").rows(piece, settings))
    with pytest.raises(BadImage) as caught:
        decode_row(row, config.max_image_pixels)
    assert str(caught.value).startswith(f"{csv_path} line {piece['offset']} ({piece['row_ids'][0]}): cannot read "
                                        f"image file {missing}")


def test_a_csv_row_without_an_image_is_named_or_skipped(tmp_path):
    csv_path, _ = chestxray14(tmp_path, patients=6, per_patient=2)
    csv_path.write_text(csv_path.read_text() + ",Mass,0,99\n")
    with pytest.raises(MedrayError, match=r"line 14: no image in the row"):
        discover(chestxray14_config(csv_path))
    skipped = discover(chestxray14_config(csv_path, on_bad_image="skip"))
    assert [row["status"] for row in skipped.rejected] == ["no image"]
    assert sum(skipped.num_rows(split) for split in ("train", "val", "test")) == 12


CHEXPERT_COLUMNS = ["Atelectasis", "Edema", "Pleural Effusion"]


def chexpert(root):
    """CheXpert's train.csv layout: Path, one column per observation with 1.0, 0.0, -1.0 or blank."""
    lines = ["Path,Sex,Atelectasis,Edema,Pleural Effusion,split"]
    rows = [("1.0", "-1.0", "", "train"), ("0.0", "1.0", "-1.0", "train"), ("", "", "1.0", "train"),
            ("-1.0", "0.0", "1.0", "val"), ("1.0", "", "", "test")]
    for index, (*values, split) in enumerate(rows):
        path = f"CheXpert-v1.0-small/train/patient{index:05d}/study1/view1_frontal.jpg"
        write(root / path, image_bytes(scan(index)))
        lines.append(",".join([path, "Female", *values, split]))
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    return root / "train.csv"


@pytest.mark.parametrize("policy, train_vectors", [
    ("ignore", [[1, -1, 0], [0, 1, -1], [0, 0, 1]]),
    ("ones", [[1, 1, 0], [0, 1, 1], [0, 0, 1]]),
    ("zeros", [[1, 0, 0], [0, 1, 0], [0, 0, 1]]),
])
def test_chexpert_uncertain_labels_follow_the_policy_and_blank_counts_as_absent(tmp_path, policy, train_vectors):
    csv_path = chexpert(tmp_path)
    source = discover(DataConfig(path=csv_path, source="csv", image_column="Path", label_columns=CHEXPERT_COLUMNS,
                                 split_column="split", uncertain=policy, mask_column=None))
    assert source.multi_label and source.class_names == CHEXPERT_COLUMNS
    assert list(labels_by_row(source, "train").values()) == train_vectors
    assert len(labels_by_row(source, "val")) == 1 and len(labels_by_row(source, "test")) == 1


def test_chexpert_value_2_stops_discovery_in_one_line_naming_file_and_row(tmp_path):
    csv_path = chexpert(tmp_path)
    csv_path.write_text(csv_path.read_text().replace("0.0,1.0,-1.0", "0.0,2.0,-1.0"))
    with pytest.raises(MedrayError) as caught:
        discover(DataConfig(path=csv_path, source="csv", image_column="Path", label_columns=CHEXPERT_COLUMNS,
                            split_column="split", mask_column=None))
    assert str(caught.value).startswith(f"{csv_path} line 3 (CheXpert-v1.0-small/train/patient00001/study1/"
                                        "view1_frontal.jpg): label value 2 is not 1 (present), 0 (absent) or -1")
    assert "\n" not in str(caught.value)


def test_a_csv_with_one_class_per_row_is_single_label(tmp_path):
    lines = ["file,diagnosis"] + [f"{n}.png,{'normal' if n % 2 else 'pneumonia'}" for n in range(20)]
    for n in range(20):
        write(tmp_path / f"{n}.png", image_bytes(scan(n)))
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    source = discover(DataConfig(path=tmp_path / "labels.csv", source="csv", image_column="file",
                                 label_column="diagnosis", label_separator=None, mask_column=None))
    assert not source.multi_label and source.class_names == ["normal", "pneumonia"]
    assert sum(sum(source.class_counts[split]) for split in ("train", "val", "test")) == 20


@pytest.mark.parametrize("data, named", [
    ({"source": "csv", "label_column": "Finding Labels", "label_columns": ["Edema"]},
     "data.label_column and data.label_columns: give one"),
    ({"source": "parquet", "patient_column": "Patient ID"}, "data.patient_column applies to data.source csv only"),
    ({"source": "csv", "label_columns": ["Edema", "Edema"]}, "data.label_columns lists 'Edema' twice"),
])
def test_csv_keys_that_contradict_each_other_are_refused(data, named):
    with pytest.raises(MedrayError, match=named):
        validate_config({"data": {"path": "x", **data}})


# --- through Ray Data ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def multilabel_phantoms(tmp_path_factory):
    from medray.data.synth import write_multilabel_dataset

    root = tmp_path_factory.mktemp("multilabel") / "data"
    write_multilabel_dataset(root, train=16, val=8, test=8, size=32, seed=5)
    return root


def synth_config(root, **overrides):
    from medray.data.phantoms import LABEL_NAMES
    from medray.data.synth import mask_column

    return DataConfig(path=root / "parquet", label_column="labels", mask_column=None,
                      mask_columns={name: mask_column(name) for name in LABEL_NAMES}, **overrides)


def test_per_label_masks_arrive_as_n_k_h_w_beside_n_k_labels(multilabel_phantoms, ray_cluster):
    config = synth_config(multilabel_phantoms)
    source = discover(config)
    assert source.has_masks and source.multi_label
    rows = read_split(source, "test", 32, config).take_batch(batch_size=8, batch_format="numpy")
    k = len(source.class_names)
    assert rows["mask"].shape == (8, k, 32, 32) and rows["mask"].dtype == np.uint8
    assert rows["label"].shape == (8, k)
    assert set(np.unique(rows["mask"])) <= {0, 255}
    # A label's mask has lesion pixels exactly where the image has that label.
    assert np.array_equal(rows["mask"].reshape(8, k, -1).max(axis=2) == 255, rows["label"] == 1)
    renamed = synth_config(multilabel_phantoms).model_copy(
        update={"mask_columns": {source.class_names[0]: "no_such_column"}})
    assert not discover(renamed).has_masks


def test_the_manifest_keeps_label_vectors_and_inspect_counts_positives(multilabel_phantoms, ray_cluster):
    config = synth_config(multilabel_phantoms)
    source = discover(config)
    frame = scan_rows(source, config)
    assert {split: labels_by_row(source, split) for split in ("train", "val", "test")} == {
        split: {row_id: list(label) for piece in pieces for row_id, label in zip(piece["row_ids"], piece["labels"])}
        for split, pieces in usable_pieces(frame, source).items()}
    assert usable_source(source, frame).class_counts == source.class_counts
    report = quality_report(frame, source.class_names, multi_label=True)
    assert list(report["splits"]["train"]["class_counts"].values()) == source.class_counts["train"]
    assert report["shortcuts"]["skipped"].startswith("multi-label data")


def test_rows_sorted_by_label_combination_reach_training_shuffled(tmp_path, ray_cluster):
    combinations = [[0, 0], [0, 1], [1, 0], [1, 1]]
    train = [combination for combination in combinations for _ in range(12)]  # sorted: 12 of each in turn
    folder = write_labels_parquet(tmp_path / "parquet", {"train": train, "val": combinations, "test": combinations},
                                  pa.list_(pa.int8()))
    config = validate_config({"data": {"path": str(folder), "label_column": "labels", "mask_column": None},
                              "model": {"input_size": 32}, "train": {"batch_size": 16}})
    data = training_data(discover(config.data), get_backbone("baseline_cnn"), 32, config)
    data.train.context.execution_options.preserve_order = True
    order = np.concatenate([batch["label"] for batch in data.train.iter_batches(batch_size=16, batch_format="numpy")])
    assert order.shape == (48, 2) and sorted(map(list, order)) == sorted(train)
    assert order.tolist() != train
