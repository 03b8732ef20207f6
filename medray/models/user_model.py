"""A Keras classifier trained elsewhere, loaded safely and checked before any Ray work starts.

A `.keras` file names the Keras that wrote it in its `metadata.json`, an `.h5` file in its
`keras_version` attribute: Keras 3 files are loaded by Keras 3, Keras 2 files by tf-keras, both
installed. The model's architecture is read as JSON first, so a Lambda layer (marshalled Python
bytecode that runs when the model loads) is refused before any loader sees it; `.keras` files
load with `safe_mode=True` and nothing is ever unpickled.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from medray.errors import MedrayError

SUFFIXES = (".keras", ".h5", ".hdf5")
# Config entries that carry Python code rather than a layer type Keras knows.
CODE_LAYERS = ("Lambda",)


@dataclass(frozen=True)
class ModelShape:
    """What the data pipeline needs from a model: square input side (pixels), channels, classes.
    A single-unit sigmoid head has `outputs` 1 and two classes."""
    input_size: int
    channels: int
    outputs: int

    @property
    def num_classes(self) -> int:
        return 2 if self.outputs == 1 else self.outputs


def load_user_model(path: str | Path, trust_code: bool = False):
    """The model in `path` (.keras or .h5), loaded by the Keras that wrote it, not compiled.

    Raises MedrayError naming the file for: a missing file, a folder (a SavedModel: how to convert
    it), a file that is not a Keras model, a
    model holding a Lambda layer without `trust_code`, a layer Keras cannot rebuild.
    """
    path = Path(path)
    if path.is_dir():
        raise MedrayError(_folder_message(path))
    if not path.is_file():
        raise MedrayError(f"explain.model {path} does not exist; pass --model with a .keras or .h5 file")
    if path.suffix.lower() not in SUFFIXES:
        raise MedrayError(f"{path}: medray reads models saved as .keras or .h5 (model.save); "
                          f"not {path.suffix or 'a file without suffix'}")
    keras_version, config = (_read_keras_zip if path.suffix.lower() == ".keras" else _read_h5)(path)
    code_layers = find_code_layers(config)
    if code_layers and not trust_code:
        raise MedrayError(f"{path}: layer {code_layers[0]!r} is a Lambda layer, which runs Python code stored in "
                          "the file when it loads; load it only if you trust its author, with "
                          "--trust-model-code (explain.trust_model_code: true)")
    loader = _keras3() if keras_version.startswith("3") else _tf_keras()
    try:
        if path.suffix.lower() == ".keras":
            return loader.models.load_model(str(path), compile=False, safe_mode=not trust_code)
        return loader.models.load_model(str(path), compile=False)
    except Exception as error:  # noqa: BLE001  (Keras raises many types for a model it cannot rebuild)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise MedrayError(f"{path}: Keras {keras_version} cannot rebuild this model ({reason[:300]}); "
                          "custom layers are not supported, re-save it with built-in layers") from None


def _folder_message(path: Path) -> str:
    """A folder passed as the model: a TensorFlow SavedModel says how to convert it. medray does not
    load SavedModels itself: a revived one is a graph of traced functions, not the layers a CAM
    layer is read from, and a folder does not travel to Ray actors as one file."""
    if not any((path / name).is_file() for name in ("saved_model.pb", "saved_model.pbtxt")):
        return f"{path} is a folder, not a model file; pass --model with a .keras or .h5 file"
    if not (path / "keras_metadata.pb").is_file():
        return (f"{path} is a TensorFlow SavedModel folder without a Keras model in it (no keras_metadata.pb, "
                "e.g. written by model.export or tf.saved_model.save); medray reads .keras or .h5 files: "
                "save the model from the code that built it with model.save('model.keras')")
    target = path.with_suffix(".keras")
    return (f"{path} is a TensorFlow SavedModel folder written by Keras 2 (tf-keras); medray reads .keras or .h5 "
            f"files: convert it once with `python -c \"import tf_keras; tf_keras.models.load_model('{path}')"
            f".save('{target}')\"` (a Lambda layer in it runs its code as it loads: convert only folders you trust)")


def load_user_model_bytes(blob: bytes, suffix: str, trust_code: bool = False):
    """The same from the file's bytes (Ray actors on any node)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"model{suffix}"
        path.write_bytes(blob)
        return load_user_model(path, trust_code)


def model_shape(model, path: str | Path) -> ModelShape:
    """Input side, channels and output units of a single-input image classifier; MedrayError otherwise."""
    if len(model.inputs) != 1:
        raise MedrayError(f"{path}: the model has {len(model.inputs)} inputs; medray explains single-image classifiers")
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4:
        raise MedrayError(f"{path}: input shape {shape} is not an image batch (batch, height, width, channels)")
    _, height, width, channels = shape
    if height is None or width is None:
        raise MedrayError(f"{path}: the model has no fixed input shape {shape}; re-save it built on "
                          "keras.Input(shape=(height, width, channels)) so that medray knows the image size")
    if height != width:
        raise MedrayError(f"{path}: input {height}x{width} is not square; medray resizes images to a square side")
    if channels not in (1, 3):
        raise MedrayError(f"{path}: input has {channels} channels; medray feeds grayscale (1) or RGB (3) images")
    if len(model.outputs) != 1 or len(model.outputs[0].shape) != 2:
        shapes = [tuple(output.shape) for output in model.outputs]
        raise MedrayError(f"{path}: output shape {shapes[0] if len(shapes) == 1 else shapes} is not a class vector "
                          "(batch, classes); medray explains classifiers with one Dense output")
    return ModelShape(int(height), int(channels), int(model.outputs[0].shape[-1]))


def check_class_names(class_names: list[str], shape: ModelShape, path: str | Path) -> None:
    if len(class_names) != shape.num_classes:
        raise MedrayError(f"{path}: the model predicts {shape.num_classes} classes but {len(class_names)} class names "
                          f"are given ({', '.join(class_names)}); set data.class_names to {shape.num_classes} names")


def find_code_layers(config) -> list[str]:
    """Names of the layers in a model's JSON config that carry Python code, nested models included."""
    found = []
    if isinstance(config, dict):
        if config.get("class_name") in CODE_LAYERS:
            found.append(str((config.get("config") or {}).get("name", config.get("class_name"))))
        for value in config.values():
            found += find_code_layers(value)
    elif isinstance(config, list):
        for value in config:
            found += find_code_layers(value)
    return found


def _read_keras_zip(path: Path) -> tuple[str, dict]:
    try:
        with zipfile.ZipFile(path) as archive:
            metadata = json.loads(archive.read("metadata.json"))
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError):
        raise MedrayError(f"{path}: not a Keras .keras file (a zip with config.json and metadata.json); "
                          "save the model with model.save('model.keras')") from None
    return str(metadata.get("keras_version", "2")), config


def _read_h5(path: Path) -> tuple[str, dict]:
    import h5py

    try:
        with h5py.File(path, "r") as file:
            attributes = dict(file.attrs)
    except OSError:
        raise MedrayError(f"{path}: not an HDF5 file; save the model with model.save('model.h5')") from None
    if "model_config" not in attributes:
        raise MedrayError(f"{path}: holds weights only, no architecture; save the whole model with "
                          "model.save(), not save_weights()")
    version = attributes.get("keras_version", "2")
    config = attributes["model_config"]
    return (version.decode() if isinstance(version, bytes) else str(version),
            json.loads(config.decode() if isinstance(config, bytes) else config))


def keras_of(model):
    """The Keras that built `model`: tf-keras (medray's own models) or Keras 3."""
    keras = _tf_keras()
    return keras if isinstance(model, keras.Model) else _keras3()


def _tf_keras():
    from medray.keras_setup import keras

    return keras


def _keras3():
    import keras

    return keras
