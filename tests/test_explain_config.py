"""The explain section of a run config: methods as one name or a list, targets, and mistakes
named by key."""

import pytest

from medray.config import load_config
from medray.errors import MedrayError

from conftest import DEMO_CONFIG


def explain_config(*overrides):
    return load_config(DEMO_CONFIG, ["data.path=unused", *overrides]).explain


def test_one_method_or_a_list_of_methods():
    assert explain_config().methods == ["gradcam"]
    assert explain_config("explain.method=[scorecam, gradcam++, scorecam]").methods == ["scorecam", "gradcam++"]


def test_every_class_can_be_the_target():
    assert explain_config("explain.target=all").target == "all"


def test_an_unknown_method_is_named_with_the_key():
    with pytest.raises(MedrayError, match="explain.method") as error:
        explain_config("explain.method=eigencam")
    assert "eigencam" in str(error.value) and "hirescam" in str(error.value)


def test_a_negative_gpu_share_is_refused():
    with pytest.raises(MedrayError, match="explain.gpus_per_actor"):
        explain_config("explain.gpus_per_actor=-1")
