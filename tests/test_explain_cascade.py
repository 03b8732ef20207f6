"""The cascade of the model randomisation check (Adebayo et al. 2018): which layers each step
re-initialises, for every allowed explain.cascade_steps."""

import numpy as np
import pytest

from medray.config import load_config
from medray.errors import MedrayError
from medray.explain.sanity import cascade_blocks, weighted_layers
from medray.keras_setup import keras

from conftest import DEMO_CONFIG


def four_block_model():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(2, 3, name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Conv2D(2, 3, name="conv2")(x)
    x = keras.layers.Conv2D(2, 1, name="conv3")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="head")(x))


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 64])
def test_every_step_count_ends_with_the_whole_model_re_initialised(steps):
    model = four_block_model()
    blocks = cascade_blocks(model, steps)
    assert len(blocks) == min(steps, 4)
    # cumulative: the last point, on which the verdict rests, has every weighted layer re-drawn
    assert sorted(index for block in blocks for index in block) == list(range(len(weighted_layers(model))))


def test_one_step_re_initialises_everything_at_once_and_more_steps_start_at_the_head():
    model = four_block_model()
    assert cascade_blocks(model, 1) == [[4, 3, 2, 0, 1]]
    assert cascade_blocks(model, 4) == [[4], [3], [2], [0, 1]]
    assert cascade_blocks(model, 2)[0] == [4]  # the head alone is the first point, as in the paper


@pytest.mark.parametrize("value", ["0", "65", "two"])
def test_a_cascade_step_count_out_of_range_is_one_line_naming_the_key(value):
    with pytest.raises(MedrayError, match=rf"explain\.cascade_steps='?{value}'? is not allowed") as error:
        load_config(DEMO_CONFIG, [f"explain.cascade_steps={value}"])
    assert "\n" not in str(error.value)


def test_the_sample_checks_with_one_cascade_step_score_the_fully_re_initialised_model(tmp_path):
    from medray.explain.sample_checks import sample_checks
    from medray.explain.scorecard import sample_figures
    from medray.models.actor import UserModelSpec
    from medray.models.preprocessing import DECLARED_PREPROCESSING, ModelInput
    from medray.task import SingleLabelTask

    keras.utils.set_random_seed(0)
    model = four_block_model()
    model.save(tmp_path / "four.keras")
    pixels = np.random.default_rng(0).integers(0, 256, (4, 8, 8), np.uint8)
    explain = load_config(DEMO_CONFIG, ["explain.cascade_steps=1", "explain.deletion_steps=2",
                                        "explain.label_randomisation_epochs=0"]).explain
    table, steps, _cost = sample_checks((tmp_path / "four.keras").read_bytes(),
                                       UserModelSpec(".keras", ModelInput(1, DECLARED_PREPROCESSING["unit"]), None),
                                       SingleLabelTask(("a", "b")), {"row_id": np.array([f"r{i}" for i in range(4)]),
                                                                     "pixels": pixels, "label": np.array([0, 1, 0, 1])},
                                       explain)
    assert steps == ["conv1..head"]
    score = sample_figures(table.to_pandas(), steps, ["a", "b"])
    assert len(score["cascade"]["rank_corr"]) == 1
    assert score["verdicts"]["model_randomisation"] in ("passed", "FAILED")
