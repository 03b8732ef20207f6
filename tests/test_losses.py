"""train.loss: focal loss and online hard example mining, pinned on hand-computed batches for every
task head, refused where they do not apply, and trained through the normal two-worker loop."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from medray.cli import main
from medray.config import validate_config
from medray.errors import MedrayError
from medray.keras_setup import keras
from medray.task import BinaryTask, MultiLabelTask, SingleLabelTask
from medray.train.loop import compile_for_phase
from medray.train.progress import Progress

from conftest import cli_args, tiny_overrides
from test_config import MINIMAL

# Three images of a two-class softmax head: the true class gets 0.9, 0.8 and 0.4.
SOFTMAX = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], dtype=np.float32)
SOFTMAX_LABELS = np.array([0, 1, 1])
# The same three images under one sigmoid unit (p of class 1): p_t is again 0.9, 0.8 and 0.4.
SIGMOID = np.array([[0.1], [0.8], [0.4]], dtype=np.float32)
# Two images, three labels; -1 is unknown and must count for nothing.
MULTI = np.array([[0.7, 0.2, 0.9], [0.4, 0.6, 0.95]], dtype=np.float32)
MULTI_LABELS = np.array([[1, 0, -1], [0, 1, 1]], dtype=np.float32)


def compiled_loss(task, outputs: np.ndarray, targets: np.ndarray, train: dict, sample_weight=None) -> float:
    """The compiled loss of a model whose output is `outputs` whatever its input, as compile_for_phase
    sets it from the run config's `train` section."""
    config = validate_config({**MINIMAL, "train": train})
    inputs = keras.Input(shape=(1,))
    zeros = keras.layers.Dense(outputs.shape[1], use_bias=False, kernel_initializer="zeros")(inputs)
    model = keras.Model(inputs, keras.layers.Lambda(lambda zero: zero + outputs)(zeros))
    compile_for_phase(model, Progress(), config, task,
                      positive_weights=[1.0] * outputs.shape[1] if task.multi_label else None)
    return model.evaluate(np.zeros((len(outputs), 1)), targets, sample_weight=sample_weight,
                          batch_size=len(outputs), verbose=0)[0]


def one_hot(labels):
    return np.eye(2, dtype=np.float32)[labels]


def test_focal_loss_of_a_softmax_head_scales_each_images_cross_entropy_by_one_minus_p_t_squared():
    expected = ((1 - 0.9) ** 2 * -math.log(0.9) + (1 - 0.8) ** 2 * -math.log(0.8)
                + (1 - 0.4) ** 2 * -math.log(0.4)) / 3
    loss = compiled_loss(SingleLabelTask(("a", "b")), SOFTMAX, one_hot(SOFTMAX_LABELS),
                         {"loss": "focal", "focal_gamma": 2.0})
    assert loss == pytest.approx(expected, rel=1e-5)


def test_focal_loss_with_gamma_zero_is_cross_entropy():
    expected = (-math.log(0.9) - math.log(0.8) - math.log(0.4)) / 3
    loss = compiled_loss(SingleLabelTask(("a", "b")), SOFTMAX, one_hot(SOFTMAX_LABELS),
                         {"loss": "focal", "focal_gamma": 0.0})
    assert loss == pytest.approx(expected, rel=1e-5)


def test_focal_loss_of_a_sigmoid_unit_weights_positives_by_alpha_and_negatives_by_one_minus_alpha():
    # image 1 is a negative (weight 1 - 0.25), images 2 and 3 positives (weight 0.25)
    expected = (0.75 * (1 - 0.9) ** 3 * -math.log(0.9) + 0.25 * (1 - 0.8) ** 3 * -math.log(0.8)
                + 0.25 * (1 - 0.4) ** 3 * -math.log(0.4)) / 3
    loss = compiled_loss(BinaryTask(("normal", "pneumonia")), SIGMOID, SOFTMAX_LABELS[:, None].astype(np.float32),
                         {"loss": "focal", "focal_gamma": 3.0, "focal_alpha": 0.25})
    assert loss == pytest.approx(expected, rel=1e-5)


def test_focal_loss_of_a_multi_label_head_averages_each_images_known_entries():
    # image 1: label 0 positive (p 0.7), label 1 negative (p 0.2, so p_t 0.8), label 2 unknown
    first = (0.25 * 0.3 ** 2 * -math.log(0.7) + 0.75 * 0.2 ** 2 * -math.log(0.8)) / 2
    # image 2: label 0 negative (p_t 0.6), labels 1 and 2 positive (p_t 0.6 and 0.95)
    second = (0.75 * 0.4 ** 2 * -math.log(0.6) + 0.25 * 0.4 ** 2 * -math.log(0.6)
              + 0.25 * 0.05 ** 2 * -math.log(0.95)) / 3
    loss = compiled_loss(MultiLabelTask(("x", "y", "z")), MULTI, MULTI_LABELS,
                         {"loss": "focal", "focal_gamma": 2.0, "focal_alpha": 0.25})
    assert loss == pytest.approx((first + second) / 2, rel=1e-5)


def test_hard_example_mining_averages_the_softmax_cross_entropy_of_the_hardest_half():
    # ceil(0.5 * 3) = 2 images: the two with p_t 0.8 and 0.4; the easy one (0.9) is left out
    expected = (-math.log(0.8) - math.log(0.4)) / 2
    loss = compiled_loss(SingleLabelTask(("a", "b")), SOFTMAX, one_hot(SOFTMAX_LABELS),
                         {"loss": "ohem", "ohem_fraction": 0.5})
    assert loss == pytest.approx(expected, rel=1e-5)


def test_hard_example_mining_ranks_unweighted_losses_then_applies_the_class_weights():
    # image 2 weighs 3 but is ranked by its own loss; images 2 and 3 are the hardest two
    expected = (3 * -math.log(0.8) + 1 * -math.log(0.4)) / 2
    loss = compiled_loss(SingleLabelTask(("a", "b")), SOFTMAX, one_hot(SOFTMAX_LABELS),
                         {"loss": "ohem", "ohem_fraction": 0.5}, sample_weight=np.array([5.0, 3.0, 1.0]))
    assert loss == pytest.approx(expected, rel=1e-5)


def test_hard_example_mining_of_a_sigmoid_unit_keeps_at_least_the_single_hardest_image():
    # ceil(0.1 * 3) = 1: only the image with p_t 0.4
    loss = compiled_loss(BinaryTask(("normal", "pneumonia")), SIGMOID, SOFTMAX_LABELS[:, None].astype(np.float32),
                         {"loss": "ohem", "ohem_fraction": 0.1})
    assert loss == pytest.approx(-math.log(0.4), rel=1e-5)


def test_hard_example_mining_of_a_multi_label_head_ranks_images_by_their_masked_loss():
    first = (-math.log(0.7) - math.log(0.8)) / 2  # 0.290
    second = (-math.log(0.6) - math.log(0.6) - math.log(0.95)) / 3  # 0.358: the harder image
    assert second > first
    loss = compiled_loss(MultiLabelTask(("x", "y", "z")), MULTI, MULTI_LABELS, {"loss": "ohem", "ohem_fraction": 0.5})
    assert loss == pytest.approx(second, rel=1e-5)


def test_alpha_on_a_softmax_head_is_refused_naming_the_key():
    config = validate_config({**MINIMAL, "train": {"loss": "focal", "focal_alpha": 0.25}})
    with pytest.raises(MedrayError, match=r"^train\.focal_alpha=0\.25: .*train\.class_balance") as error:
        SingleLabelTask(("a", "b")).check_config(config)
    assert "\n" not in str(error.value)


def test_an_unknown_loss_is_refused_naming_the_key_and_the_choices():
    with pytest.raises(MedrayError, match=r"train\.loss='dice' is not allowed: .*cross_entropy.*focal.*ohem"):
        validate_config({**MINIMAL, "train": {"loss": "dice"}})


@pytest.mark.parametrize("loss", [["train.loss=focal", "train.focal_gamma=2"],
                                  ["train.loss=ohem", "train.ohem_fraction=0.5"]])
def test_each_loss_trains_two_workers_in_sync_through_the_normal_loop(ray_cluster, tiny_dataset, tmp_path, loss):
    overrides = [*tiny_overrides(tiny_dataset / "parquet", tmp_path), "output.run_id=loss", "train.epochs=2",
                 "train.early_stopping_patience=0", "explain.enabled=false", "report.enabled=false", *loss]
    assert main(cli_args(overrides)) == 0
    history = pd.read_csv(tmp_path / "loss" / "history.csv")
    assert list(history["epoch"]) == [1, 2]
    assert np.isfinite(history["loss"]).all() and (history["loss"] > 0).all()
    assert (history["replica_weight_spread"] == 0).all()  # the demo config trains on two workers
