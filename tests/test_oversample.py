"""Oversampling: exactly the target rows per class and epoch, the seed choosing which rows repeat."""

from collections import Counter

import numpy as np

from medray.config import load_config
from medray.data.oversample import plan_oversampling, repeat_rows
from medray.data.pipeline import training_data
from medray.data.sources import discover
from medray.models.registry import get_backbone
from medray.task import SingleLabelTask
from tests.conftest import DEMO_CONFIG

LABELS = np.array([0] * 7 + [1] * 3 + [2] * 12)
ROW_IDS = np.array([f"train.parquet#{index}" for index in range(len(LABELS))], dtype=object)


def one_epoch(plan) -> dict:
    return repeat_rows({"row_id": ROW_IDS, "label": LABELS, "pixels": np.arange(len(LABELS))}, plan)


def test_every_class_gets_exactly_the_target_rows():
    plan = plan_oversampling(ROW_IDS, LABELS, target=10, seed=0)
    epoch = one_epoch(plan)
    assert Counter(epoch["label"].tolist()) == {0: 10, 1: 10, 2: 10} and plan.total_rows == 30
    # floor(10 / 7) = 1 copy each and 3 rows a second one; class 1: 3 copies each and 1 row a fourth
    copies = Counter(epoch["row_id"].tolist())
    assert sorted(copies[row] for row in ROW_IDS[LABELS == 0]) == [1, 1, 1, 1, 2, 2, 2]
    assert sorted(copies[row] for row in ROW_IDS[LABELS == 1]) == [3, 3, 4]


def test_columns_stay_aligned_when_rows_repeat():
    epoch = one_epoch(plan_oversampling(ROW_IDS, LABELS, target=10, seed=0))
    assert all(ROW_IDS[pixel] == row_id for pixel, row_id in zip(epoch["pixels"], epoch["row_id"]))


def test_the_seed_decides_which_rows_get_the_extra_copy():
    first = plan_oversampling(ROW_IDS, LABELS, target=10, seed=0)
    assert first.extra_rows == plan_oversampling(ROW_IDS[::-1], LABELS[::-1], target=10, seed=0).extra_rows
    others = [plan_oversampling(ROW_IDS, LABELS, target=10, seed=seed).extra_rows for seed in range(1, 6)]
    assert any(extra != first.extra_rows for extra in others)


def test_max_keeps_the_largest_class_once_and_a_small_target_subsamples():
    epoch = one_epoch(plan_oversampling(ROW_IDS, LABELS, target="max", seed=0))
    assert Counter(epoch["label"].tolist()) == {0: 12, 1: 12, 2: 12}
    assert set(Counter(epoch["row_id"][epoch["label"] == 2].tolist()).values()) == {1}
    small = one_epoch(plan_oversampling(ROW_IDS, LABELS, target=5, seed=0))
    large_class = small["row_id"][small["label"] == 2]
    assert len(large_class) == 5 and len(set(large_class.tolist())) == 5


def class_weights(counts: list[int], class_balance: str) -> list[float]:
    labels = np.repeat(np.arange(len(counts)), counts)
    return SingleLabelTask(("a", "b")).balance(labels, class_balance)["class_weights"]


def test_loss_weights_only_with_class_balance_weights():
    assert class_weights([10, 30], "weights") == [2.0, 2 / 3]
    assert class_weights([10, 30], "oversample") == [] and class_weights([10, 30], "none") == []


def test_oversampled_train_data_has_the_planned_rows_per_class_each_differently_augmented(tiny_dataset, ray_cluster):
    config = load_config(DEMO_CONFIG, [f"data.path={tiny_dataset / 'parquet'}", "model.input_size=32",
                                       "train.class_balance=oversample", "train.oversample_to=30"])
    source = discover(config.data)
    data = training_data(source, get_backbone("baseline_cnn"), 32, config)
    labels, images = [], []
    for batch in data.train.iter_batches(batch_size=None, batch_format="numpy"):
        labels.extend(batch["label"].tolist())
        images.extend(image.tobytes() for image in batch["image"])
    assert Counter(labels) == {0: 30, 1: 30, 2: 30} and data.train_rows == 90
    # 60 source rows repeated to 90: the copies got their own flips and rotations
    assert len(set(images)) == 90
