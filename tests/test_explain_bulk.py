"""The bulk explain job through Ray Data: every test image mapped once per method, overlays,
galleries and checks on disk, and a job killed mid-way that resumes to exactly one map per row."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medray.cli import main
from medray.config import load_config
from medray.evaluate import predictions_from_maps
from medray.explain.gallery import COLUMNS_READ, tile_captions, with_uncertainty
from medray.keras_setup import keras
from medray.models.classifier import build_classifier
from medray.models.registry import get_backbone
from medray.report import build_report
from medray.task import SingleLabelTask

from conftest import DEMO_CONFIG, ROOT, tiny_overrides
from test_report_build import image_sources

TEST_ROWS = 24  # tiny_dataset's test split
SAMPLE = 12  # images the faithfulness and sanity checks run on
CLASSES = ("no_lesion", "bright_round_lesion", "dark_irregular_lesion")


def fake_run(folder, seed=0):
    """A run folder as `medray run` leaves it, with an untrained 32 px model."""
    folder.mkdir(parents=True)
    keras.utils.set_random_seed(seed)
    model = build_classifier(get_backbone("baseline_cnn"), 32, 3, load_config(DEMO_CONFIG, [
        "data.path=unused"]).model)
    model.save(str(folder / "model.keras"))  # a str: tf-keras writes legacy HDF5 for a Path
    return folder


def explain_args(tiny_dataset, run_dir, *overrides):
    args = ["explain", "--config", str(DEMO_CONFIG), "--run", str(run_dir)]
    for override in [*tiny_overrides(tiny_dataset / "parquet", run_dir.parent), *overrides]:
        args += ["--set", override]
    return args


@pytest.fixture(scope="module")
def explained(tiny_dataset, tmp_path_factory, ray_cluster):
    run_dir = fake_run(tmp_path_factory.mktemp("runs") / "run")
    assert main(explain_args(tiny_dataset, run_dir, "explain.method=[gradcam,hirescam]",
                             "explain.batch_size=8", "explain.gallery_size=4", f"explain.check_sample={SAMPLE}",
                             "explain.label_randomisation_epochs=2")) == 0
    return run_dir / "explain"


def test_every_test_image_gets_one_map_per_method_with_its_prediction(explained):
    maps = pd.read_parquet(explained / "maps")
    assert len(maps) == 2 * TEST_ROWS
    for method in ("gradcam", "hirescam"):
        rows = maps[maps["method"] == method]
        assert rows["row_id"].is_unique and len(rows) == TEST_ROWS
    probabilities = np.stack(maps["probabilities"].to_numpy())
    assert (maps["prediction"] == probabilities.argmax(axis=1)).all()
    assert (maps["target"] == maps["prediction"]).all()  # explain.target: predicted
    cams = np.stack(maps["cam"].to_numpy())
    # 8 x 8 feature maps, stored in the geometry of the 32 x 32 scans
    assert cams.dtype == np.float16 and cams.shape == (2 * TEST_ROWS, 32 * 32)
    assert (maps["cam_height"] == 32).all() and (maps["cam_width"] == 32).all()
    assert cams.min() >= 0 and cams.max() <= 1


def test_overlays_are_pictures_filed_by_method_and_true_class(explained):
    maps = pd.read_parquet(explained / "maps", columns=["label", "method", "overlay_file"])
    for label, method, relative in maps.itertuples(index=False):
        assert relative.startswith(f"{method}/{CLASSES[label]}/")
        with Image.open(explained / "overlays" / relative) as image:
            assert image.mode == "RGB" and image.width >= 224


def test_localisation_rests_on_every_lesion_and_the_costly_checks_on_the_sample(explained):
    scores = json.loads((explained / "checks.json").read_text())
    assert set(scores) == {"gradcam", "hirescam"}
    for score in scores.values():
        assert score["maps"] == TEST_ROWS and score["lesion_maps"] > 0
        assert score["pointing_game"]["n"] == score["lesion_maps"]
        low, high = score["pointing_game"]["ci"]
        assert 0 <= low <= score["pointing_game"]["value"] <= high <= 1
        assert 0 < score["localisation_chance"]["value"] < 0.5
        assert score["sample_images"] == SAMPLE and score["road"]["n"] == SAMPLE
        assert -0.5 <= score["road"]["value"] <= 0.5 and -0.5 <= score["random_order_road"]["value"] <= 0.5
        assert score["cost"]["per_map"] > 0 and {"maps", "ROAD", "cascade"} <= set(score["cost"]["seconds"])
        assert sum(figures["maps"] for figures in score["per_class"].values()) == SAMPLE
        assert len(score["cascade"]["rank_corr"]) == len(score["cascade"]["steps"]) >= 3
        assert score["verdicts"]["model_randomisation"] in ("passed", "FAILED")
        assert score["verdicts"]["data_randomisation"] in ("passed", "FAILED")
    sample = pd.read_parquet(explained / "sample_checks.parquet")
    assert len(sample) == 2 * SAMPLE and sample.groupby("method")["row_id"].nunique().eq(SAMPLE).all()
    with Image.open(explained / "checks.png") as image:
        assert image.width > 500
    summary = (explained / "summary.txt").read_text()
    assert "gradcam" in summary and "hirescam" in summary and "pointing" in summary
    assert "ROAD" in summary and "cost of the checks" in summary and "verdict:" in summary


def test_galleries_show_each_class_correct_and_misclassified_and_an_empty_one_is_a_line_of_text(explained):
    names = {path.name for path in (explained / "galleries").glob("*.png")}
    notes = explained / "galleries" / "empty.txt"
    empty = notes.read_text() if notes.is_file() else ""
    maps = pd.read_parquet(explained / "maps")
    maps = maps[maps["method"] == "gradcam"]
    for index, name in enumerate(CLASSES):
        for kind, rows in (("correct", maps[(maps["label"] == index) & (maps["prediction"] == index)]),
                           ("misclassified", maps[(maps["label"] == index) & (maps["prediction"] != index)])):
            assert (f"{name}-{kind}.png" in names) == (len(rows) > 0)
            assert (f"{name}: {kind} (0 of" in empty) == (len(rows) == 0)
    with Image.open(explained / "galleries" / "no_lesion-correct.png") as image:
        assert image.width > 200


def test_every_class_target_writes_one_map_and_overlay_per_class(tiny_dataset, tmp_path, ray_cluster):
    run_dir = fake_run(tmp_path / "run")
    assert main(explain_args(tiny_dataset, run_dir, "explain.target=all", "explain.checks=false",
                             "explain.gallery_size=0")) == 0
    maps = pd.read_parquet(run_dir / "explain" / "maps")
    assert len(maps) == 3 * TEST_ROWS
    assert (maps.groupby("row_id")["target"].apply(sorted).apply(list) == [[0, 1, 2]] * TEST_ROWS).all()
    assert maps["overlay_file"].is_unique
    assert maps["pointing_game"].isna().all()  # checks off
    assert not (run_dir / "explain" / "sample_checks.parquet").exists()
    assert len(list((run_dir / "explain" / "overlays").rglob("*.png"))) == 3 * TEST_ROWS


def test_a_run_folder_without_a_model_is_refused_by_name(tiny_dataset, tmp_path, capsys, ray_cluster):
    (tmp_path / "run").mkdir()
    assert main(explain_args(tiny_dataset, tmp_path / "run")) == 2
    assert "model.keras does not exist" in capsys.readouterr().err


KILLABLE_JOB = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from medray.cluster import connect
    from medray.config import load_config
    from medray.data.pipeline import read_split
    from medray.data.sources import discover
    from medray.explain.bulk import explain_split
    from medray.task import SingleLabelTask

    config = load_config(sys.argv[1], sys.argv[3:])
    run_dir = Path(sys.argv[2])
    source = discover(config.data)
    connect(config.scaling)
    test = read_split(source, "test", 32, config.data, originals=True)

    def slowly(shard):
        print(shard.name, flush=True)
        time.sleep(2)  # time for the test to kill this driver between two shards

    explain_split(test, (run_dir / "model.keras").read_bytes(), "baseline_cnn", SingleLabelTask(tuple(source.class_names)),
                  config.explain, run_dir / "explain", on_shard=slowly)
    print("finished", flush=True)
""")


def test_a_killed_job_restarted_writes_exactly_one_map_per_image_method_layer_and_target(tiny_dataset, tmp_path,
                                                                                         ray_cluster):
    run_dir = fake_run(tmp_path / "run")
    settings = ["explain.batch_size=4", "explain.method=[gradcam,hirescam]", "explain.target=all",
                "explain.check_sample=6", "explain.label_randomisation_epochs=1", "explain.gallery_size=0"]
    overrides = [*tiny_overrides(tiny_dataset / "parquet", tmp_path), *settings]
    script = tmp_path / "job.py"
    script.write_text(KILLABLE_JOB)
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address}
    job = subprocess.Popen([sys.executable, str(script), str(DEMO_CONFIG), str(run_dir), *overrides],
                           stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    written = []  # the shards it wrote, between the console's progress lines
    for line in job.stdout:
        if line.startswith("part-"):
            written.append(line.strip())
        if len(written) == 2:
            break
    job.send_signal(signal.SIGKILL)
    job.wait(timeout=30)
    assert written == ["part-000000.parquet", "part-000001.parquet"]
    shards_before = sorted(path.name for path in (run_dir / "explain" / "maps").glob("part-*.parquet"))
    assert 2 <= len(shards_before) < TEST_ROWS // 4  # killed part-way
    assert not (run_dir / "explain" / "sample_checks.parquet").exists()

    assert main(explain_args(tiny_dataset, run_dir, *settings)) == 0
    maps = pd.read_parquet(run_dir / "explain" / "maps")
    key = ["row_id", "method", "layer", "target"]
    assert len(maps) == TEST_ROWS * 2 * 3 and not maps.duplicated(key).any()
    assert maps["row_id"].nunique() == TEST_ROWS
    summary = (run_dir / "explain" / "summary.txt").read_text()
    resumed = int(summary.split("(")[1].split(" ")[0])
    assert resumed == 4 * len(shards_before)
    assert len(list((run_dir / "explain" / "overlays").rglob("*.png"))) == TEST_ROWS * 2 * 3
    sample = pd.read_parquet(run_dir / "explain" / "sample_checks.parquet")
    assert len(sample) == 6 * 2 * 3 and not sample.duplicated(key).any()


def test_resuming_with_another_method_is_refused_rather_than_mixed(tiny_dataset, tmp_path, capsys, ray_cluster):
    run_dir = fake_run(tmp_path / "run")
    settings = ["explain.batch_size=8", "explain.checks=false", "explain.gallery_size=0", "explain.overlays=false"]
    assert main(explain_args(tiny_dataset, run_dir, *settings)) == 0
    capsys.readouterr()
    assert main(explain_args(tiny_dataset, run_dir, *settings, "explain.method=hirescam")) == 2
    error = capsys.readouterr().err
    assert "other settings (method changed)" in error and "Delete that folder" in error
    assert set(pd.read_parquet(run_dir / "explain" / "maps")["method"]) == {"gradcam"}


def test_gallery_captions_of_sampled_images_carry_their_entropy_and_map_spread(explained):
    maps = pd.read_parquet(explained / "maps", columns=COLUMNS_READ)
    maps = maps[maps["method"] == "gradcam"].reset_index(drop=True)
    sample = pd.read_parquet(explained / "sample_checks.parquet")
    sample = sample[sample["method"] == "gradcam"].set_index("row_id")
    captions = tile_captions(with_uncertainty(maps, explained / "sample_checks.parquet"), SingleLabelTask(CLASSES))
    assert len(captions) == TEST_ROWS
    for row_id, (caption, _) in zip(maps["row_id"], captions):
        if row_id in sample.index:
            figures = sample.loc[row_id]
            assert caption.endswith(f"\nH {figures['entropy']:.2f} bits, spread {figures['map_spread']:.3f}")
        else:
            assert "bits" not in caption
    assert sum("bits" in caption for caption, _ in captions) == SAMPLE


def test_the_report_shows_each_class_under_each_method_and_the_map_stability(explained, tiny_dataset, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(explained.parent, run_dir)
    task = SingleLabelTask(CLASSES)
    predictions_from_maps(run_dir / "explain" / "maps", task).to_parquet(run_dir / "predictions.parquet")
    maps = pd.read_parquet(run_dir / "explain" / "maps", columns=COLUMNS_READ)
    test_counts = {name: int((maps[maps["method"] == "gradcam"]["label"] == index).sum())
                   for index, name in enumerate(CLASSES)}
    # data.json and config.yaml as `medray run` leaves them
    (run_dir / "data.json").write_text(json.dumps({"kind": "parquet", "path": str(tiny_dataset / "parquet"),
                                                   "class_names": list(CLASSES), "class_counts": {"test": test_counts}}))
    (run_dir / "config.yaml").write_text("model:\n  backbone: baseline_cnn\n")
    html = build_report(run_dir).read_text()

    table = html[html.index('id="methods-by-class-table"'):]
    table = table[:table.index("</table>")]
    assert '<th class="left">gradcam</th><th class="left">hirescam</th>' in table
    for index, name in enumerate(CLASSES):
        first = maps[(maps["method"] == "gradcam") & (maps["label"] == index)]
        correct = first[first["prediction"] == index]
        chosen = (correct if len(correct) else first).sort_values("confidence", ascending=False).iloc[0]["row_id"]
        row = table[table.index(f"<td>{name}</td>"):]
        row = row[:row.index("</tr>")]
        assert chosen in row
        # the same image under each method: one overlay per method, the same file under each method's folder
        overlays = image_sources(row)
        files = maps[maps["row_id"] == chosen].set_index("method")["overlay_file"]
        assert overlays == [f"explain/overlays/{files['gradcam']}", f"explain/overlays/{files['hirescam']}"]
        assert files["gradcam"].split("/", 1)[1] == files["hirescam"].split("/", 1)[1]
        assert all((run_dir / src).is_file() for src in overlays)
    assert 'id="map-stability"' in html and "plots/map_spread_by_correctness.png" in image_sources(html)
    assert (run_dir / "plots" / "map_spread_by_correctness.png").is_file()
