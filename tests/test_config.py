import pytest

from medray.config import load_config, validate_config
from medray.errors import MedrayError

from conftest import DEMO_CONFIG

MINIMAL = {"data": {"path": "somewhere"}}


def test_demo_config_is_valid_and_trains_on_two_workers():
    config = load_config(DEMO_CONFIG)
    assert config.scaling.num_workers == 2
    assert config.model.backbone == "baseline_cnn"


@pytest.mark.parametrize("raw, named", [
    ({**MINIMAL, "trian": {}}, "unknown key trian (did you mean train?"),
    ({**MINIMAL, "train": {"epoks": 3}}, "unknown key train.epoks (did you mean epochs?"),
    ({**MINIMAL, "train": {"lr": -0.1}}, "train.lr=-0.1 is not allowed"),
    ({**MINIMAL, "train": {"epochs": "many"}}, "train.epochs='many' is not allowed"),
    ({**MINIMAL, "data": {"path": "x", "source": "excel"}}, "data.source='excel' is not allowed"),
    ({**MINIMAL, "scaling": {"cpus_per_worker": 0}}, "scaling.cpus_per_worker=0 is not allowed"),
    ({**MINIMAL, "output": {"run_id": "../escape"}}, "output.run_id='../escape' is not allowed"),
    ({}, "missing key data"),
    ({**MINIMAL, "train": {"batch_size": 1}, "scaling": {"num_workers": 2}}, "train.batch_size=1 is smaller than"),
    ({**MINIMAL, "model": {"backbone": "xception", "pooling": "flatten"}}, "model.pooling=flatten: only baseline_cnn"),
    ({**MINIMAL, "model": {"conv_filters": []}}, "model.conv_filters=[] is not allowed"),
    ({**MINIMAL, "train": {"label_smoothing": 1.0}}, "train.label_smoothing=1.0 is not allowed"),
])
def test_bad_keys_and_values_are_rejected_with_the_key_named(raw, named):
    with pytest.raises(MedrayError) as error:
        validate_config(raw)
    assert named in str(error.value)


def test_set_overrides_single_keys_with_yaml_typed_values():
    config = load_config(DEMO_CONFIG, ["train.lr=3e-4", "train.epochs=3", "explain.enabled=false"])
    assert config.train.lr == pytest.approx(3e-4)
    assert config.train.epochs == 3
    assert config.explain.enabled is False


def test_set_override_with_a_typo_is_rejected_like_the_file():
    with pytest.raises(MedrayError, match="unknown key train.learning_rte"):
        load_config(DEMO_CONFIG, ["train.learning_rte=0.1"])


def test_set_override_without_equals_sign_is_explained():
    with pytest.raises(MedrayError, match="expected KEY=VALUE"):
        load_config(DEMO_CONFIG, ["train.lr"])


def test_missing_and_malformed_config_files_are_named(tmp_path):
    with pytest.raises(MedrayError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("data: [unclosed\n")
    with pytest.raises(MedrayError, match="broken.yaml is not valid YAML"):
        load_config(broken)
