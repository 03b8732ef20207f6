"""The report built from hand-made run and sweep folders (no Ray): every plot, every gallery link,
escaped names, the leaderboard, and a sentence for a folder that is not a run."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medray.cli import main
from medray.errors import MedrayError
from medray.filenames import safe_filename
from medray.report import build_report
from medray.report.metrics import classification_metrics, prediction_arrays

RUN_PLOTS = {"confusion_matrix_counts.png", "confusion_matrix_normalised.png", "roc_curves.png",
             "reliability_diagram.png", "confidence_histogram.png", "recall_vs_frequency.png",
             "class_distribution.png", "training_curves.png"}
# A real run's report also draws the reliability diagram after temperature scaling (calibration.json)
# and, with the explain stage's sample checks, the map spread against correctness.
CALIBRATED_RUN_PLOTS = RUN_PLOTS | {"reliability_diagram_calibrated.png", "map_spread_by_correctness.png"}


def write_run_folder(run_dir: Path, class_names: list[str], rows: int = 60, seed: int = 0,
                     overlays: bool = True) -> pd.DataFrame:
    """A run folder as `medray run` writes it: predictions, data.json, history.csv, overlays."""
    rng = np.random.default_rng(seed)
    k = len(class_names)
    labels = rng.integers(0, k, rows)
    logits = rng.normal(size=(rows, k)) + 2.0 * np.eye(k)[labels]  # mostly right, some wrong
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    predicted = probabilities.argmax(axis=1)
    predictions = pd.DataFrame({
        "row_id": [f"test/{i:04d}" for i in range(rows)],
        "label": labels, "label_name": [class_names[i] for i in labels],
        "prediction": predicted, "prediction_name": [class_names[i] for i in predicted],
        "confidence": probabilities.max(axis=1).astype(np.float32),
        "probabilities": list(probabilities.astype(np.float32)),
    })
    run_dir.mkdir(parents=True)
    predictions.to_parquet(run_dir / "predictions.parquet", index=False)
    counts = {split: {name: int(n) for name, n in zip(class_names, np.bincount(labels, minlength=k) * scale)}
              for split, scale in (("train", 5), ("val", 1), ("test", 1))}
    (run_dir / "data.json").write_text(json.dumps(
        {"kind": "parquet", "path": "/data", "class_names": class_names, "class_counts": counts}))
    pd.DataFrame({"epoch": [1, 2, 3], "loss": [1.0, 0.7, 0.5], "accuracy": [0.5, 0.7, 0.8],
                  "val_loss": [1.1, 0.8, 0.7], "val_accuracy": [0.4, 0.6, 0.7]}).to_csv(run_dir / "history.csv", index=False)
    (run_dir / "config.yaml").write_text("model:\n  backbone: baseline_cnn\nexplain:\n  method: gradcam\n")
    if overlays:
        for row in predictions.itertuples():
            folder = run_dir / "gradcam" / "overlays" / safe_filename(class_names[row.label])
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (32, 32), (200, 40, 40)).save(folder / f"{safe_filename(row.row_id)}.png")
    return predictions


class ImageSources(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


def image_sources(html: str) -> list[str]:
    parser = ImageSources()
    parser.feed(html)
    return parser.sources


@pytest.mark.parametrize("class_names", [["normal", "pneumonia"], ["no_lesion", "bright", "dark"]])
def test_report_draws_every_plot_for_binary_and_multiclass(tmp_path, class_names):
    run_dir = tmp_path / "run"
    write_run_folder(run_dir, class_names)
    report = build_report(run_dir)
    assert report == run_dir / "report.html"
    assert {path.name for path in (run_dir / "plots").glob("*.png")} == RUN_PLOTS
    linked = {Path(src).name for src in image_sources(report.read_text()) if src.startswith("plots/")}
    assert linked == RUN_PLOTS


def test_report_headline_numbers_equal_the_metrics(tmp_path):
    run_dir = tmp_path / "run"
    predictions = write_run_folder(run_dir, ["a", "b", "c"], rows=90, seed=4)
    metrics = classification_metrics(*prediction_arrays(predictions), ["a", "b", "c"])
    html = build_report(run_dir).read_text()
    shown = dict(re.findall(r'data-metric="([a-z_0-9]+)">([^<]+)<', html))
    assert set(shown) == {"accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "roc_auc_ovr",
                          "expected_calibration_error"}
    for name, text in shown.items():
        assert float(text) == pytest.approx(metrics[name], abs=5e-5), name


def test_misclassified_rows_link_to_their_overlays(tmp_path):
    run_dir = tmp_path / "run"
    predictions = write_run_folder(run_dir, ["a", "b", "c"], rows=90, seed=1)
    wrong = predictions[predictions["label"] != predictions["prediction"]]
    assert len(wrong) > 0
    sources = set(image_sources(build_report(run_dir, examples_per_class=1000).read_text()))
    overlays = {src for src in sources if src.startswith("gradcam/overlays/")}
    expected = {f"gradcam/overlays/{safe_filename(['a', 'b', 'c'][row.label])}/{safe_filename(row.row_id)}.png"
                for row in wrong.itertuples()}
    assert overlays == expected


def test_examples_per_class_caps_the_gallery_with_the_most_confident_mistakes(tmp_path):
    run_dir = tmp_path / "run"
    predictions = write_run_folder(run_dir, ["a", "b"], rows=200, seed=2)
    html = build_report(run_dir, examples_per_class=2).read_text()
    overlays = [src for src in image_sources(html) if src.startswith("gradcam/overlays/a/")]
    wrong_a = predictions[(predictions["label"] == 0) & (predictions["prediction"] != 0)]
    most_confident = wrong_a.sort_values("confidence", ascending=False).head(2)
    assert len(wrong_a) > 2
    assert overlays == [f"gradcam/overlays/a/{safe_filename(r)}.png" for r in most_confident["row_id"]]


def test_overlays_are_found_where_the_maps_table_records_them(tmp_path):
    run_dir = tmp_path / "run"
    predictions = write_run_folder(run_dir, ["a", "b", "c"], rows=60, seed=1, overlays=False)
    wrong = predictions[predictions["label"] != predictions["prediction"]]
    maps = run_dir / "explain" / "maps"
    maps.mkdir(parents=True)
    records = []
    for row in wrong.itertuples():
        for target in (row.label, row.prediction):  # two maps a row; the predicted class's is shown
            relative = f"gradcam/{['a', 'b', 'c'][row.label]}/{safe_filename(row.row_id)}-t{target}.png"
            records.append({"row_id": row.row_id, "method": "gradcam", "target": target,
                            "prediction": row.prediction, "overlay_file": relative})
            (run_dir / "explain" / "overlays" / relative).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8)).save(run_dir / "explain" / "overlays" / relative)
    pd.DataFrame(records).to_parquet(maps / "part-00000.parquet")
    sources = {src for src in image_sources(build_report(run_dir, examples_per_class=1000).read_text())
               if "overlays" in src}
    assert sources == {f"explain/overlays/gradcam/{['a', 'b', 'c'][row.label]}/{safe_filename(row.row_id)}"
                       f"-t{row.prediction}.png" for row in wrong.itertuples()}


def test_missing_overlays_show_a_placeholder_not_a_broken_image(tmp_path):
    run_dir = tmp_path / "run"
    write_run_folder(run_dir, ["a", "b"], overlays=False)
    html = build_report(run_dir).read_text()
    assert "no CAM overlay" in html
    assert not [src for src in image_sources(html) if "overlays" in src]


def test_class_names_from_data_are_escaped(tmp_path):
    run_dir = tmp_path / "run"
    write_run_folder(run_dir, ["<script>alert(1)</script>", "a&b"])
    html = build_report(run_dir).read_text()
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "a&amp;b" in html


def test_explain_galleries_are_included(tmp_path):
    run_dir = tmp_path / "run"
    write_run_folder(run_dir, ["a", "b"])
    gallery = run_dir / "explain" / "galleries"
    gallery.mkdir(parents=True)
    for name in ("one.png", "two.png"):
        Image.new("RGB", (16, 16)).save(gallery / name)
    sources = image_sources(build_report(run_dir).read_text())
    assert {"explain/galleries/one.png", "explain/galleries/two.png"} <= set(sources)


def test_an_empty_gallery_is_one_line_of_text_not_a_picture(tmp_path):
    run_dir = tmp_path / "run"
    write_run_folder(run_dir, ["a", "b"])
    gallery = run_dir / "explain" / "galleries"
    gallery.mkdir(parents=True)
    Image.new("RGB", (16, 16)).save(gallery / "a-correct.png")
    (gallery / "empty.txt").write_text("b: misclassified (0 of 30): no images\n")
    html = build_report(run_dir).read_text()
    assert '<p class="note empty-gallery">b: misclassified (0 of 30): no images</p>' in html
    assert not any("misclassified" in source for source in image_sources(html))


def test_the_explanations_table_shows_each_methods_verdict_beside_its_road_figures(tmp_path):
    from medray.explain.scorecard import sample_figures
    from test_explain_scorecard import CLASSES, sample_rows

    run_dir = tmp_path / "run"
    write_run_folder(run_dir, CLASSES)
    score = {"maps": 90, "images": 90, "pointing_game": None, **sample_figures(sample_rows(), ["head", "conv0"], CLASSES),
             "cost": {"seconds": {"maps": 1.0}, "shared": {}, "per_map": 0.25}}
    (run_dir / "explain").mkdir()
    (run_dir / "explain" / "checks.json").write_text(json.dumps({"gradcam": score}))
    html = build_report(run_dir).read_text()
    section = html[html.index('<section id="explanations">'):]
    section = section[:section.index("</section>")]
    assert "<td>0.250</td>" in section and "no better than random on the sample by ROAD" in section
    assert re.search(r"<td>no_lesion</td><td>60</td>.*<td>no better than random</td>", section)
    assert re.search(r"<td>lesion</td><td>30</td>.*<td>faithful</td>", section)


def test_sweep_folder_shows_the_leaderboard_and_each_models_metrics(tmp_path):
    sweep = tmp_path / "sweep"
    for index, name in enumerate(["trial_a", "trial_b"]):
        write_run_folder(sweep / name, ["a", "b", "c"], seed=index)
        (sweep / name / "metrics.json").write_text(json.dumps(
            {"accuracy": 0.5 + index / 10, "macro_f1": 0.25, "roc_auc_ovr": None}))
    pd.DataFrame({"trial": ["trial_b", "trial_a"], "backbone": ["resnet<50>", "baseline_cnn"],
                  "val_loss": [0.31234567, 0.4], "epochs": [3, 5]}).to_csv(sweep / "leaderboard.csv", index=False)
    html = build_report(sweep).read_text()
    leaderboard = html[html.index('id="leaderboard"'):html.index("</table>", html.index('id="leaderboard"'))]
    assert leaderboard.index("trial_b") < leaderboard.index("trial_a")
    assert "resnet&lt;50&gt;" in leaderboard and "0.3123" in leaderboard and ">5<" in leaderboard
    models = html[html.index('id="model-metrics"'):]
    assert "0.6000" in models and "0.5000" in models and "n/a" in models
    assert "plots/model_comparison.png" in image_sources(html)
    assert (sweep / "plots" / "model_comparison.png").is_file()


def test_cli_rebuilds_the_report(tmp_path, capsys):
    run_dir = tmp_path / "run"
    write_run_folder(run_dir, ["a", "b"])
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report.html").is_file()
    assert str(run_dir / "report.html") in capsys.readouterr().out


def test_a_folder_that_is_not_a_run_is_refused_with_a_sentence(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MedrayError, match="neither predictions.parquet"):
        build_report(tmp_path / "empty")
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_predictions_of_another_class_count_are_refused(tmp_path):
    run_dir = tmp_path / "run"
    write_run_folder(run_dir, ["a", "b", "c"])
    data = json.loads((run_dir / "data.json").read_text())
    (run_dir / "data.json").write_text(json.dumps({**data, "class_names": ["a", "b"]}))
    with pytest.raises(MedrayError, match=r"predictions.parquet does not match the 2 classes"):
        build_report(run_dir)


def test_unreadable_leaderboard_names_the_file(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "leaderboard.csv").write_bytes(b"")
    with pytest.raises(MedrayError, match="leaderboard.csv"):
        build_report(sweep)


def test_a_class_missing_from_the_test_split_is_shown_as_undefined_with_what_the_macro_averages_cover(tmp_path):
    run_dir = tmp_path / "run"
    predictions = write_run_folder(run_dir, ["a", "b"], rows=40, seed=2)
    # a third class the model knows but the test split lacks, and that is never predicted
    predictions["probabilities"] = [np.append(p * 0.99, 0.01).astype(np.float32) for p in predictions["probabilities"]]
    predictions.to_parquet(run_dir / "predictions.parquet", index=False)
    data = json.loads((run_dir / "data.json").read_text())
    data["class_names"] = ["a", "b", "rare"]
    for counts in data["class_counts"].values():
        counts["rare"] = 0
    data["class_counts"]["train"]["rare"] = 3
    (run_dir / "data.json").write_text(json.dumps(data))
    html = build_report(run_dir).read_text()
    assert "Macro F1: mean over a, b</li>" in html
    assert "rare precision, recall, F1: n/a, no test image of this class and none predicted as it" in html
