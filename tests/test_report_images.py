"""The report's error analysis shows the misclassified test images themselves, named by their own
file names, when the run made no CAM overlays (explain.enabled: false)."""

import json

import numpy as np
import pandas as pd
import yaml
from PIL import Image

from medray.config import DataConfig
from medray.data.manifest import prepare_source
from medray.data.sources import discover
from medray.report import build_report

from data_factory import hf_parquet, image_bytes, scan
from test_report_build import image_sources


def test_misclassified_images_without_maps_are_shown_as_thumbnails_named_by_their_files(tmp_path, ray_cluster):
    data, run_dir = tmp_path / "data", tmp_path / "run"
    scans = {split: [scan(seed) for seed in range(start, start + 6)] for split, start in
             (("train", 0), ("val", 100), ("test", 200))}
    for split, images in scans.items():
        hf_parquet(data / f"{split}-00000-of-00001.parquet", [image_bytes(image) for image in images],
                   [0, 1] * 3, ["normal", "pneumonia"], names=[f"{split}-scan-{i}.jpeg" for i in range(6)])
    config = DataConfig(path=data)
    run_dir.mkdir()
    source, report = prepare_source(discover(config), config, run_dir)  # the run's manifest
    test_rows = pd.read_parquet(run_dir / "manifest.parquet").query("split == 'test'")
    wrong = test_rows["label"] == 0  # every normal scan predicted pneumonia
    predictions = pd.DataFrame({
        "row_id": test_rows["row_id"], "label": test_rows["label"],
        "prediction": np.where(wrong, 1, test_rows["label"]), "confidence": np.float32(0.9),
        "probabilities": [np.float32([0.1, 0.9]) if w else np.eye(2, dtype=np.float32)[label]
                          for w, label in zip(wrong, test_rows["label"])]})
    predictions.to_parquet(run_dir / "predictions.parquet", index=False)
    (run_dir / "data.json").write_text(json.dumps(report))
    pd.DataFrame({"epoch": [1], "loss": [0.7], "val_loss": [0.7]}).to_csv(run_dir / "history.csv", index=False)
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"data": {"path": str(data)}, "explain": {"enabled": False},
                                                         "model": {"backbone": "baseline_cnn"}}))

    html = build_report(run_dir).read_text()
    assert "no CAM overlay" not in html and "#" not in " ".join(image_sources(html))
    for position in (0, 2, 4):  # the normal test scans, shown under their own names
        assert f"test-scan-{position}.jpeg → pneumonia" in html
    thumbnails = sorted((run_dir / "plots" / "test_images").glob("*.png"))
    assert {f"plots/test_images/{path.name}" for path in thumbnails} <= set(image_sources(html))
    assert len(thumbnails) == 3
    with Image.open(thumbnails[0]) as thumbnail:  # the decoded scan, drawn 10x without blurring
        assert thumbnail.size == (160, 160)
        shown = np.asarray(thumbnail)[::10, ::10]
    assert any(np.array_equal(shown, scans["test"][position]) for position in (0, 2, 4))
