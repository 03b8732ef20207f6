"""The shortcut detector of `medray data inspect`: it names a class that acquisition alone gives away,
and stays quiet where only anatomy differs."""

import json

import numpy as np
import pandas as pd

from medray.cli import main
from medray.data.inspect import outliers
from medray.data.manifest import acquisition_facts
from medray.data.phantoms import CLASS_NAMES, make_phantoms
from medray.data.sources import RawRow
from medray.data.shortcuts import shortcut_report
from medray.data.synth import write_demo_dataset


def inspect(data, out, capsys) -> tuple[dict, str]:
    assert main(["data", "inspect", "--path", str(data), "--out", str(out)]) == 0
    return json.loads((out / "inspect.json").read_text())["shortcuts"], capsys.readouterr().out


def test_a_planted_second_scanner_is_named_by_class_and_statistic(tmp_path, capsys, ray_cluster):
    data = tmp_path / "planted"
    write_demo_dataset(data, train=60, val=20, test=24, size=32, seed=3, second_scanner="dark_irregular_lesion")
    shortcuts, printed = inspect(data / "parquet", tmp_path / "out", capsys)
    assert len(shortcuts["warnings"]) == 1
    assert shortcuts["warnings"][0].startswith("class dark_irregular_lesion can be told from the others by mean "
                                               "brightness alone")
    assert shortcuts["per_class"]["dark_irregular_lesion"]["balanced_accuracy"]["mean brightness"] >= 0.95
    assert shortcuts["balanced_accuracy"] > shortcuts["balanced_chance"] + 0.2
    assert "WARNING  class dark_irregular_lesion" in printed


def test_plain_phantoms_raise_no_shortcut_warning(tiny_dataset, tmp_path, capsys, ray_cluster):
    shortcuts, printed = inspect(tiny_dataset / "parquet", tmp_path / "out", capsys)
    assert shortcuts["warnings"] == [] and "no class is separable by one acquisition statistic" in printed
    assert shortcuts["balanced_accuracy"] < shortcuts["balanced_chance"] + 0.25
    assert max(score for scores in shortcuts["per_class"].values()
               for score in scores["balanced_accuracy"].values()) < 0.9


def test_a_file_name_prefix_that_follows_the_class_is_named():
    # The chest X-ray folders of Kermany et al.: pneumonia files are person*_bacteria_*, normal ones IM-*.
    rng = np.random.default_rng(0)
    used = pd.DataFrame({"label": [0] * 20 + [1] * 20, "mean": rng.normal(120, 10, 40), "std": rng.normal(50, 5, 40),
                         "name_prefix": ["im"] * 20 + ["person"] * 19 + ["im"]})
    report = shortcut_report(used, ["normal", "pneumonia"])
    assert [text.split(" (")[0] for text in report["warnings"]] == [
        "class normal can be told from the others by file-name prefix alone",
        "class pneumonia can be told from the others by file-name prefix alone"]
    assert "'person' in 95% of its images against 0% of the others" in report["warnings"][1]


def test_folder_rows_record_their_file_name_prefix_and_subfolder():
    row = RawRow("train/PNEUMONIA/hospital_b/person12_bacteria_3.jpeg", 1, "/data/x.jpeg", b"\xff\xd8\xff rest")
    assert acquisition_facts(row, "folders") == {"format": "JPEG", "name_prefix": "person",
                                                 "source_folder": "hospital_b", "bit_depth": 0}
    array_row = RawRow("a.npz#train#3", 0, "a.npz train row 3", np.zeros((4, 4), np.uint8))
    assert acquisition_facts(array_row, "npz")["format"] == "npz"


def test_second_scanner_phantoms_have_another_intensity_window():
    plain, _, labels = make_phantoms(30, 32, seed=1)
    planted, _, same_labels = make_phantoms(30, 32, seed=1, second_scanner=CLASS_NAMES.index("no_lesion"))
    assert np.array_equal(labels, same_labels)
    scanner = labels == 0
    assert np.array_equal(plain[~scanner], planted[~scanner])
    assert planted[scanner].min() >= 40 and plain[scanner].min() < 20  # black background lifted to the window floor


def test_outliers_are_a_short_list_ranked_within_split_and_class():
    rng = np.random.default_rng(2)
    means = np.concatenate([rng.normal(50, 2, 200), rng.normal(150, 2, 200)])  # two classes, two bands
    used = pd.DataFrame({"row_id": [f"r{i}" for i in range(400)], "split": "train", "label": [0] * 200 + [1] * 200,
                         "mean": means, "std": rng.normal(40, 1, 400)})
    used.loc[5, "mean"], used.loc[300, "mean"] = 80.0, 60.0  # odd within their class
    found = outliers(used)
    assert [row["row_id"] for row in found["ranked"][:2]] == ["r300", "r5"]
    assert len(found["ranked"]) <= 10
