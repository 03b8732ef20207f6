"""A classifier's CAM layer and class scores, read from its graph rather than from layer names.

`run_graph` calls a Sequential or Functional model's layers one by one in graph order, entering
nested models (a keras.applications backbone used as one layer), so the feature map of any layer at
any depth is an ordinary tensor of the same computation as the scores. keras-io's Grad-CAM builds a
`keras.Model(model.inputs, inner_layer.output)` instead, which fails with a disconnected graph as
soon as the layer sits inside a nested backbone; tf-keras-vis rebuilds the graph for the same
reason. Both tf-keras and Keras 3 models replay here, each through its own node structure.

The CAM layer (Selvaraju et al. 2017, section 3: "the last convolutional layer") is found as the
4-D feature map (5-D for a volume model) with a spatial grid above 1 x 1 that feeds the model's last global pooling or
Flatten; paths of nested layers read `outer/inner`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from medray.errors import MedrayError
from medray.explain.targets import CamTarget, target_for_head
from medray.keras_setup import keras, tf

POOLING = {"GlobalAveragePooling2D", "GlobalMaxPooling2D", "GlobalAvgPool2D", "GlobalMaxPool2D", "Flatten",
           "GlobalAveragePooling3D", "GlobalMaxPooling3D", "GlobalAvgPool3D", "GlobalMaxPool3D"}
# Ranks of a feature map CAM can read: (N, h, w, C) of an image model, (N, d, h, w, C) of a volume model.
FEATURE_RANKS = (4, 5)
# Output activations whose input is the class score Grad-CAM differentiates: near saturation their
# output's gradient vanishes (to exactly zero in float32), the score's does not.
SQUASHING = {"softmax", "sigmoid"}
# Layers listed when a named CAM layer does not exist: the ones nearest the head.
CANDIDATES_SHOWN = 12
# A CAM layer's grid below this many cells a side cannot say where in the image the evidence lies.
MIN_CAM_GRID = 3


@dataclass
class Call:
    path: str  # the layer's name, prefixed by its nested models' names: "mobilenetv2_1.00_224/out_relu"
    layer: object
    inputs: list
    outputs: list


def run_graph(model, inputs, on_call: Callable[[Call], None] | None = None,
              replace: dict[int, Callable] | None = None, prefix: str = ""):
    """`model`'s output for `inputs`, computed layer by layer in inference mode; `on_call` sees
    every layer call (nested ones included), `replace` maps id(layer) to a function called instead."""
    replace = replace or {}

    def call(layer, args, kwargs):
        path = prefix + layer.name
        if _is_graph_model(layer):
            outputs = run_graph(layer, args[0], on_call, replace, prefix=f"{path}/")
        else:
            if "training" in kwargs:  # a node built with training=True (Monte Carlo dropout) still infers
                kwargs = {**kwargs, "training": False}
            outputs = replace.get(id(layer), layer)(*args, **kwargs)
        if on_call is not None:
            on_call(Call(path, layer, tf.nest.flatten(args), tf.nest.flatten(outputs)))
        return outputs

    if _is_sequential(model):
        for layer in model.layers:
            inputs = call(layer, (inputs,), {})
        return inputs
    if not _is_graph_model(model):
        raise MedrayError(f"model {model.name} is a subclassed model; medray explains Sequential and "
                          "Functional models, whose layers it can follow")
    if isinstance(model, keras.Model):
        return _replay_tf_keras(model, inputs, call)
    return _replay_keras3(model, inputs, call)


def _replay_tf_keras(model, inputs, call):
    # tf-keras's own Functional._run_internal_graph, with each layer call going through `call`.
    usage = model._tensor_usage_count
    tensors = {}
    for reference, value in zip(model.inputs, tf.nest.flatten(inputs)):
        tensors[str(id(reference))] = [value] * usage[str(id(reference))]
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.is_input or any(key not in tensors for key in node.flat_input_ids):
                continue
            args, kwargs = node.map_arguments(tensors)
            outputs = call(node.layer, args, kwargs)
            for key, value in zip(node.flat_output_ids, tf.nest.flatten(outputs)):
                tensors[key] = [value] * usage[key]
    results = [tensors[str(id(output))].pop() for output in model.outputs]
    return tf.nest.pack_sequence_as(model._nested_outputs, results)


def _replay_keras3(model, inputs, call):
    # Keras 3's own Function._run_through_graph, with each operation call going through `call`.
    tensors = {id(reference): value for reference, value in zip(model.inputs, tf.nest.flatten(inputs))}
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if not node.operation or node.is_input or any(id(x) not in tensors for x in node.input_tensors):
                continue
            args, kwargs = node.arguments.fill_in(tensors)
            outputs = call(node.operation, args, kwargs)
            for reference, value in zip(node.outputs, tf.nest.flatten(outputs)):
                tensors[id(reference)] = value
    results = [tensors[id(output)] for output in model.outputs]
    return results[0] if len(results) == 1 else results


def _is_sequential(model) -> bool:
    return type(model).__name__ == "Sequential"


def _is_graph_model(layer) -> bool:
    return _is_sequential(layer) or (hasattr(layer, "_nodes_by_depth") and hasattr(layer, "layers")
                                     and getattr(layer, "_is_graph_network", True))


def trace(model) -> list[Call]:
    """Every layer call of one forward pass of a blank image, in graph order."""
    calls: list[Call] = []
    run_graph(model, tf.zeros((1, *model.inputs[0].shape[1:])), calls.append)
    return calls


def find_cam_layer(calls: list[Call], model_name: str) -> str:
    """The path of the last 4-D feature map with a grid above 1 x 1 feeding the last global pooling
    or Flatten of a traced model."""
    producers: dict[int, Call] = {}
    for call in calls:  # a nested model's output is its last inner layer's: the inner call wins
        for tensor in call.outputs:
            producers.setdefault(id(tensor), call)
    pooling = [call for call in calls
               if type(call.layer).__name__ in POOLING and len(call.inputs[0].shape) in FEATURE_RANKS]
    if not pooling:
        raise MedrayError(f"model {model_name}: no global pooling or Flatten layer follows a 4-D feature map; "
                          f"name the CAM layer with explain.cam_layer ({_candidates(calls)})")
    tensor = pooling[-1].inputs[0]
    while True:
        producer = producers.get(id(tensor))
        if producer is None:
            raise MedrayError(f"model {model_name}: every feature map before {pooling[-1].path} is 1 x 1; "
                              f"a larger input size, or naming explain.cam_layer, gives a map ({_candidates(calls)})")
        if np.prod(producer.outputs[0].shape[1:-1]) > 1:
            return producer.path
        tensor = producer.inputs[0]


def cam_layer_warnings(calls: list[Call], layers: Sequence[str]) -> list[str]:
    """What makes a CAM layer's map say little: a grid below MIN_CAM_GRID cells a side, or a layer
    that is one branch of a block (the model's output is reachable without passing through it, as
    in an Inception block whose last grid above 1 x 1 is inside one of its branches)."""
    known = {call.path: call for call in calls}
    warnings = []
    for name in layers:
        call = known[name]
        grid = call.outputs[0].shape[1:-1]
        if min(grid) < MIN_CAM_GRID:
            warnings.append(f"CAM layer {name} is {' x '.join(map(str, grid))}: too coarse to show where in the image the "
                            "evidence lies; a larger input, or an earlier layer in explain.cam_layer, gives a finer "
                            "map")
        if _bypassed(calls, call):
            blocks = [other.path for other in calls
                      if len(other.outputs[0].shape) in FEATURE_RANKS and not _is_graph_model(other.layer)
                      and np.prod(other.outputs[0].shape[1:-1]) > 1 and not _bypassed(calls, other)]
            better = f"; the last block output with a grid above 1 x 1 is {blocks[-1]}" if blocks else ""
            warnings.append(f"CAM layer {name} ({call.outputs[0].shape[-1]} channels) is one branch of a block, not "
                            f"the block's output: its map shows what that branch alone sees{better} "
                            "(name it in explain.cam_layer)")
    return warnings


def _bypassed(calls: list[Call], skipped: Call) -> bool:
    """Whether the model's output is reachable from its input on a path that avoids `skipped`
    (calls are in graph order; a nested model's own call is skipped, its inner calls followed)."""
    produced = {id(tensor) for call in calls for tensor in call.outputs}
    reachable = {id(tensor) for call in calls for tensor in call.inputs if id(tensor) not in produced}
    for call in calls:
        if call is skipped or _is_graph_model(call.layer):
            continue
        if any(id(tensor) in reachable for tensor in call.inputs):
            reachable.update(id(tensor) for tensor in call.outputs)
    return id(calls[-1].outputs[0]) in reachable


def _candidates(calls: list[Call]) -> str:
    paths = list(dict.fromkeys(call.path for call in calls
                               if len(call.outputs[0].shape) in FEATURE_RANKS and not _is_graph_model(call.layer)))
    shown = paths[-CANDIDATES_SHOWN:]
    more = f", and {len(paths) - len(shown)} earlier" if len(paths) > len(shown) else ""
    return f"4-D layers, last first: {', '.join(reversed(shown))}{more}"


class CamGraph:
    """images -> (feature maps of the CAM layers, class scores, class probabilities), one pass.

    Class scores are what Grad-CAM differentiates: the head's pre-activation output, taken in a
    clone of the head layer (the user's model is never changed), turned into per-class scores by
    the CAM target (medray.explain.targets): a softmax class's logit, +-logit of a single sigmoid,
    the logit of label k. `target` None infers it from the head (a model trained elsewhere).
    Shapes: images (N, H, W, C) float32; maps (N, h, w, channels) each; scores, probabilities (N, K).
    `warnings`: lines saying why a CAM layer's maps may mean little (`cam_layer_warnings`);
    `channels`: each CAM layer's number of channels.
    """

    def __init__(self, model, cam_layers: str | Sequence[str] | None = None, target: CamTarget | None = None):
        self.model = model
        calls = trace(model)
        if cam_layers is None:
            self.layers: tuple[str, ...] = (find_cam_layer(calls, model.name),)
        else:
            self.layers = (cam_layers,) if isinstance(cam_layers, str) else tuple(cam_layers)
        known = {call.path: call for call in calls}
        for name in self.layers:
            if name not in known or len(known[name].outputs[0].shape) not in FEATURE_RANKS:
                raise MedrayError(f"model {model.name} has no layer {name!r} with a 4-D feature map; name one by "
                                  f"its path, nested layers as outer/inner ({_candidates(calls)})")
        self.channels = tuple(int(known[name].outputs[0].shape[-1]) for name in self.layers)
        # Spoken by the job that chose the layers (medray.explain.model_job), not by every actor.
        self.warnings = cam_layer_warnings(calls, self.layers)
        head = _head_call(calls)
        self.head_activation, self._replace = _pre_activation(head.layer)
        self.num_outputs = int(calls[-1].outputs[0].shape[-1])
        self.target = target or target_for_head(self.head_activation, self.num_outputs)

    def __call__(self, images: tf.Tensor) -> tuple[list[tf.Tensor], tf.Tensor, tf.Tensor]:
        captured = {}

        def keep(call: Call) -> None:
            if call.path in self.layers:
                captured[call.path] = call.outputs[0]

        scores = run_graph(self.model, images, keep, self._replace)
        return [captured[name] for name in self.layers], *self.class_scores(scores)

    def forward(self, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(class scores, class probabilities) without reading any feature map."""
        return self.class_scores(run_graph(self.model, images, None, self._replace))

    def masked_scores(self, images: tf.Tensor) -> tf.Tensor:
        """(N, K) what Score-CAM compares across channel-masked inputs, as the target defines it."""
        return self.target.masked_scores(run_graph(self.model, images, None, self._replace))

    def class_scores(self, logits: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return self.target.class_scores(logits), self.target.probabilities(logits)


def _head_call(calls: list[Call]) -> Call:
    """The innermost layer call producing the model's output: a classifier wrapped as one layer
    (`Model(inp, inner(inp))`) returns its inner head's tensor, whose producer is traced first."""
    output = id(calls[-1].outputs[0])
    return next(call for call in calls if any(id(tensor) == output for tensor in call.outputs))


def _pre_activation(head) -> tuple[str, dict[int, Callable]]:
    """The head's squashing activation and the replacement that yields its input score instead."""
    config = head.get_config()
    activation = config.get("activation")
    activation = activation if isinstance(activation, str) else None
    kind = type(head).__name__
    if kind == "Softmax":
        return "softmax", {id(head): lambda inputs, **kwargs: inputs}
    if kind == "Activation" and activation in SQUASHING:
        return activation, {id(head): lambda inputs, **kwargs: inputs}
    if kind == "Dense" and activation in SQUASHING:
        # The head's own variables, read at every call: weights re-assigned after this (the
        # sanity checks' cascade re-initialises the head in place) change the score too.
        def score(inputs, **kwargs):
            outputs = tf.tensordot(inputs, head.kernel, [[len(inputs.shape) - 1], [0]])
            return outputs + head.bias if head.use_bias else outputs

        return activation, {id(head): score}
    # A linear output is read as scores already (logits).
    return "sigmoid" if int(head.get_config().get("units", 0) or 0) == 1 else "softmax", {}
