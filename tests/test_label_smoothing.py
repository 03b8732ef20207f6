"""train.label_smoothing reaches the loss the model trains on."""

import numpy as np
import pytest

from medray.task import SingleLabelTask
from medray.config import validate_config
from medray.keras_setup import keras
from medray.train.loop import compile_for_phase
from medray.train.progress import Progress

from test_config import MINIMAL

PROBABILITIES = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], dtype=np.float32)
LABELS = np.array([0, 1, 1])


def compiled_loss(smoothing: float) -> float:
    """The compiled loss of a model whose output is PROBABILITIES whatever its input."""
    config = validate_config({**MINIMAL, "train": {"label_smoothing": smoothing}})
    inputs = keras.Input(shape=(1,))
    outputs = keras.layers.Dense(2, use_bias=False, kernel_initializer="zeros")(inputs)
    model = keras.Model(inputs, keras.layers.Lambda(lambda zeros: zeros + PROBABILITIES)(outputs))
    compile_for_phase(model, Progress(), config, SingleLabelTask(("a", "b")))
    return model.evaluate(np.zeros((3, 1)), keras.utils.to_categorical(LABELS, 2), batch_size=3, verbose=0)[0]


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_the_loss_is_cross_entropy_against_smoothed_targets(smoothing):
    # one-hot targets pulled towards uniform: 1 - s + s / k for the true class, s / k for the other
    targets = keras.utils.to_categorical(LABELS, 2) * (1 - smoothing) + smoothing / 2
    expected = -np.mean(np.sum(targets * np.log(PROBABILITIES), axis=1))
    assert compiled_loss(smoothing) == pytest.approx(expected, rel=1e-5)
