"""Training on class-sorted data (class folders list their rows class by class) learns: the rows are
reordered every epoch, so batches mix the classes."""

import json

import numpy as np
import pytest

from conftest import cli_args, tiny_overrides
from data_factory import image_bytes, write
from medray.cli import main

CLASSES = ("clear", "bright_spot", "dark_spot")
SPLIT_ROWS = {"train": 180, "val": 45, "test": 60}
SHARES = (0.5, 0.3, 0.2)  # the largest class is half of every split
EPOCHS = 4


def spot_scan(rng: np.random.Generator, label: int, size: int = 32) -> np.ndarray:
    """Noise around mid-grey, with a bright (class 1) or dark (class 2) 6 px square somewhere."""
    pixels = rng.integers(90, 150, (size, size)).astype(np.uint8)
    if label:
        top, left = rng.integers(2, size - 8, 2)
        pixels[top:top + 6, left:left + 6] = 240 if label == 1 else 10
    return pixels


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """Class folders, which the folders source lists class by class (tests/test_shuffle.py)."""
    root = tmp_path_factory.mktemp("class-sorted")
    rng = np.random.default_rng(11)
    for split, rows in SPLIT_ROWS.items():
        labels = rng.permutation(np.repeat([0, 1, 2], [round(share * rows) for share in SHARES]))
        images = [image_bytes(spot_scan(rng, int(label))) for label in labels]
        for index, (label, image) in enumerate(zip(labels, images)):
            write(root / "folders" / split / CLASSES[label] / f"{split}_{index:04d}.png", image)
    return root


def trained_metrics(layouts, tmp_path, layout: str) -> dict:
    overrides = [*tiny_overrides(layouts / layout, tmp_path), f"data.source={layout}", "data.mask_column=null",
                 f"train.epochs={EPOCHS}", "train.batch_size=32", "explain.enabled=false", "report.enabled=false",
                 f"output.run_id={layout}"]
    assert main(cli_args(overrides)) == 0
    return json.loads((tmp_path / layout / "metrics.json").read_text())


def test_class_sorted_folders_train_to_well_above_the_largest_class(layouts, ray_cluster, tmp_path):
    """180 training images listed class by class, 60 test images (30 of the largest class). That every
    training batch mixes the classes is pinned by tests/test_shuffle.py; this is the end-to-end outcome.
    Test accuracy after 3 epochs on 2 cores (30 Nov 2026): 1.000, 1.000, 0.967, 0.683 (multi-worker
    training is not bit-reproducible), so the run is judged by its ranking (one-vs-rest ROC AUC) and by
    accuracy well above the largest class's share, after 4 epochs."""
    metrics = trained_metrics(layouts, tmp_path, "folders")
    print("class-sorted folders:", {name: metrics[name] for name in ("accuracy", "roc_auc_ovr", "macro_f1")})
    assert metrics["roc_auc_ovr"] >= 0.9
    assert metrics["accuracy"] >= 0.7
    assert metrics["warnings"] == []
