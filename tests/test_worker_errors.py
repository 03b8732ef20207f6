"""Whatever a Ray worker raises reaches the user as one line, never as Ray's wrapped traceback."""


import numpy as np
import pytest
import ray

from medray.task import SingleLabelTask
from medray.config import load_config
from medray.data.pipeline import read_split
from medray.data.sources import discover
from medray.errors import MedrayError, exception_in_traceback, user_error
from medray.evaluate import predict

from conftest import DEMO_CONFIG
from data_factory import copy_with_broken_row


def failure_of(dataset: ray.data.Dataset) -> BaseException:
    with pytest.raises(Exception) as caught:
        dataset.materialize()
    return caught.value


def test_an_unforeseen_exception_in_map_batches_becomes_one_line_naming_it(ray_cluster):
    def divide_by_zero(batch: dict) -> dict:  # nested: Ray ships it by value, the test module is not importable
        return {"ratio": [value / 0 for value in batch["value"].tolist()]}

    error = failure_of(ray.data.from_items([{"value": 1}]).map_batches(divide_by_zero))
    message = str(user_error(error))
    assert message.startswith("a Ray worker failed with ZeroDivisionError: division by zero;")
    assert "\n" not in message and "Traceback" not in message


def test_a_medray_error_in_map_batches_comes_back_as_its_own_sentence(ray_cluster):
    def raise_medray_error(batch: dict) -> dict:
        raise MedrayError("data.csv row 3: label 'x' is not a known class; fix the label")

    error = failure_of(ray.data.from_items([{"value": 1}]).map_batches(raise_medray_error))
    assert str(user_error(error)) == "data.csv row 3: label 'x' is not a known class; fix the label"


def test_a_corrupt_mask_in_a_decode_task_is_named_by_file_and_row(tiny_dataset, tmp_path, ray_cluster):
    data = tmp_path / "parquet"
    test_file = copy_with_broken_row(tiny_dataset / "parquet", data, "test", 2, "mask", b"not a png")
    data_config = load_config(DEMO_CONFIG, [f"data.path={data}"]).data
    error = failure_of(read_split(discover(data_config), "test", 32, data_config))
    assert str(user_error(error)).startswith(f"{test_file} row 2 (mask): cannot decode the mask")


def test_a_mask_of_another_shape_than_its_image_is_named_rather_than_stretched_onto_it(tiny_dataset, tmp_path,
                                                                                       ray_cluster):
    from data_factory import image_bytes

    half = image_bytes(np.full((16, 32), 255, np.uint8))  # 32 wide, 16 tall: the 32 x 32 scan's top half?
    data = tmp_path / "parquet"
    test_file = copy_with_broken_row(tiny_dataset / "parquet", data, "test", 2, "mask", half)
    data_config = load_config(DEMO_CONFIG, [f"data.path={data}"]).data
    error = failure_of(read_split(discover(data_config), "test", 32, data_config))
    assert str(user_error(error)) == (f"{test_file} row 2 (mask): the mask is 32x16 pixels but its image 32x32; "
                                      "give each image a mask of its own width and height")


def test_an_actor_that_cannot_load_its_model_fails_with_one_line(tiny_dataset, ray_cluster):
    data_config = load_config(DEMO_CONFIG, [f"data.path={tiny_dataset / 'parquet'}"]).data
    test = read_split(discover(data_config), "test", 32, data_config)
    with pytest.raises(Exception) as caught:
        predict(test, b"these bytes are no .keras file", "baseline_cnn", SingleLabelTask(("a", "b", "c")), 8, 1)
    message = str(user_error(caught.value))
    assert message.startswith("a Ray worker failed with ") and "\n" not in message


def test_a_driver_side_bug_keeps_its_traceback():
    assert user_error(KeyError("programming error")) is None


def test_a_tune_trials_error_file_gives_its_exception_line():
    text = ('Failure # 1 (occurred at 2026-11-30)\n\x1b[36mray::_Inner.train()\x1b[39m (pid=1)\n'
            '  File "loop.py", line 3, in train\n    x = 1 / 0\nZeroDivisionError: division by zero\n\n'
            'The above exception was the direct cause of the following exception:\n'
            'ray.exceptions.RayTaskError: boom\n')
    assert exception_in_traceback(text) == "ZeroDivisionError: division by zero"
