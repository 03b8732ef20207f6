"""Build the classifier a run trains, and move it between processes as a safe `.keras` file."""

from __future__ import annotations

import tempfile
from pathlib import Path

from medray.keras_setup import keras
from medray.models.registry import Backbone
from medray.task import Head

# Always the zip format, where safe_mode refuses code. Left to infer it from ".keras", tf-keras
# switches to legacy HDF5 after its first save in any thread but the main one (its v3 flag is
# thread-local and restored to False), and Ray Train runs the training loop in such a thread.
KERAS_V3 = "keras_v3"


def build_classifier(backbone: Backbone, input_size: int, head: Head | int, model_config,
                     channels: int | None = None) -> keras.Model:
    """`head`: the task's output layer (medray.task.Head), or a number of classes for a softmax
    head; `channels`: of the input, by default the backbone's own (see preprocessing.input_channels)."""
    head = Head(head, "softmax") if isinstance(head, int) else head
    return backbone.build(input_size, channels or backbone.model_input.channels, head, model_config)


def copy_weights(source: keras.Model, target: keras.Model) -> None:
    """Copy weights layer by layer, matched by name: unlike `set_weights(get_weights())` this does
    not depend on which layers are trainable (that changes the flat order)."""
    for layer in target.layers:
        if layer.weights:
            layer.set_weights(source.get_layer(layer.name).get_weights())


def initial_model_bytes(backbone: Backbone, input_size: int, head: Head | int, model_config) -> bytes | None:
    """The classifier with its pretrained weights as `.keras` bytes, built once on the driver so
    that workers never download; None when training starts from random weights."""
    if model_config.weights == "none":
        return None
    model = build_classifier(backbone, input_size, head, model_config)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "initial.keras"
        model.save(path, save_format=KERAS_V3)
        return path.read_bytes()


def load_model_file(path: str | Path) -> keras.Model:
    # safe_mode refuses to deserialise arbitrary code (lambdas) from a model file.
    return keras.models.load_model(str(path), compile=False, safe_mode=True)


def load_model_bytes(blob: bytes) -> keras.Model:
    """Rebuild a model sent as the bytes of its `.keras` file (Ray actors on any node)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        path.write_bytes(blob)
        return load_model_file(path)
