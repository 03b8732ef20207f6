"""Loading a model trained elsewhere: the matching Keras, Lambda layers refused, bad files in one line."""

import re

import h5py
import numpy as np
import pytest

from medray.errors import MedrayError
from medray.keras_setup import keras
from medray.models.user_model import ModelShape, check_class_names, load_user_model, model_shape


def small_classifier(library=keras, units=3, lambda_layer=False):
    inputs = library.Input((16, 16, 1))
    x = library.layers.Conv2D(4, 3, name="conv")(inputs)
    if lambda_layer:
        x = library.layers.Lambda(lambda t: t * 2, name="double")(x)
    x = library.layers.GlobalAveragePooling2D()(x)
    outputs = library.layers.Dense(units, activation="softmax")(x)
    return library.Model(inputs, outputs)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_a_tf_keras_model_loads_with_tf_keras_and_predicts_the_same(tmp_path, suffix):
    model = small_classifier()
    model.save(tmp_path / f"m{suffix}", **({"save_format": "keras_v3"} if suffix == ".keras" else {}))
    loaded = load_user_model(tmp_path / f"m{suffix}")
    assert isinstance(loaded, keras.Model)
    images = np.random.default_rng(0).random((2, 16, 16, 1)).astype(np.float32)
    assert np.allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)
    assert model_shape(loaded, "m") == ModelShape(16, 1, 3)


def test_a_keras3_model_loads_with_keras3(tmp_path):
    import keras as keras3

    small_classifier(keras3).save(tmp_path / "m.keras")
    loaded = load_user_model(tmp_path / "m.keras")
    assert isinstance(loaded, keras3.Model) and not isinstance(loaded, keras.Model)


def test_a_lambda_layer_is_refused_by_name_unless_trusted(tmp_path):
    small_classifier(lambda_layer=True).save(tmp_path / "m.h5")
    with pytest.raises(MedrayError, match=r"m\.h5: layer 'double' is a Lambda layer.*--trust-model-code"):
        load_user_model(tmp_path / "m.h5")
    assert load_user_model(tmp_path / "m.h5", trust_code=True).get_layer("double") is not None


@pytest.mark.parametrize("name, content, message", [
    ("notes.keras", b"not a zip", "not a Keras .keras file"),
    ("notes.h5", b"not hdf5", "not an HDF5 file"),
    ("model.pt", b"", r"medray reads models saved as \.keras or \.h5"),
])
def test_a_file_that_is_not_a_model_is_named(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(MedrayError, match=re.escape(name) + ".*" + message):
        load_user_model(tmp_path / name)


def test_weights_only_h5_says_to_save_the_whole_model(tmp_path):
    with h5py.File(tmp_path / "w.h5", "w") as file:
        file.create_dataset("conv", data=np.zeros(3))
    with pytest.raises(MedrayError, match="weights only"):
        load_user_model(tmp_path / "w.h5")


def test_no_fixed_input_shape_asks_for_one():
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(inputs)))
    with pytest.raises(MedrayError, match=r"m\.h5: the model has no fixed input shape.*keras\.Input"):
        model_shape(model, "m.h5")


def test_an_output_that_is_not_a_class_vector_is_refused():
    inputs = keras.Input((16, 16, 1))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs))
    with pytest.raises(MedrayError, match=r"m\.h5: output shape \(None, 14, 14, 2\) is not a class vector"):
        model_shape(model, "m.h5")


def test_class_names_must_match_the_model_outputs():
    check_class_names(["normal", "tumour"], ModelShape(16, 1, 1), "m.h5")  # a sigmoid head has two classes
    with pytest.raises(MedrayError, match=r"m\.h5: the model predicts 3 classes but 2 class names"):
        check_class_names(["normal", "tumour"], ModelShape(16, 1, 3), "m.h5")


@pytest.mark.parametrize("name, expected", [
    ("none", [0.0, 127.5, 255.0]), ("unit", [0.0, 0.5, 1.0]), ("symmetric", [-1.0, 0.0, 1.0]),
    ("mobilenet_v2", [-1.0, 0.0, 1.0]),
])
def test_declared_preprocessing_maps_pixels_as_the_model_was_trained(name, expected):
    from medray.explain.model_job import preprocessing

    pixels = np.array([0.0, 127.5, 255.0], np.float32).reshape(1, 1, 3, 1)
    assert np.allclose(preprocessing(name)(pixels).ravel(), expected)


def test_imagenet_preprocessing_matches_keras_torch_mode():
    from medray.explain.model_job import preprocessing

    pixels = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype(np.float32)
    reference = keras.applications.imagenet_utils.preprocess_input(pixels.copy(), mode="torch")
    assert np.allclose(preprocessing("imagenet")(pixels), reference, atol=1e-5)


def test_a_savedmodel_folder_is_named_as_one_with_the_conversion_that_works(tmp_path):
    model = small_classifier()
    model.save(tmp_path / "exported", save_format="tf")  # a TensorFlow SavedModel folder, written by tf-keras
    with pytest.raises(MedrayError) as error:
        load_user_model(tmp_path / "exported")
    message = str(error.value)
    assert "\n" not in message and "does not exist" not in message
    assert re.search(r"exported is a TensorFlow SavedModel folder.*tf_keras\.models\.load_model\(.*\)\.save\(", message)
    # The conversion it gives, run as given (it names the Keras that wrote the folder), is read by medray.
    command = re.search(r"`python -c \"(.*)\"`", message).group(1)
    exec(command.replace(str(tmp_path / "exported.keras"), str(tmp_path / "converted.keras")), {})
    images = np.random.default_rng(0).random((2, 16, 16, 1)).astype(np.float32)
    assert np.allclose(load_user_model(tmp_path / "converted.keras").predict(images, verbose=0),
                       model.predict(images, verbose=0), atol=1e-6)
    (tmp_path / "plain").mkdir()
    with pytest.raises(MedrayError, match=r"plain is a folder, not a model file; pass --model with a \.keras or \.h5"):
        load_user_model(tmp_path / "plain")
