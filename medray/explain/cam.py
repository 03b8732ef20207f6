"""Class activation maps, computed for a whole batch in one compiled TensorFlow function.

All the mechanics live here: activations of the backbone's CAM layers (one per branch), the
gradients of the class score (or, for Score-CAM, the scores of channel-masked inputs), a weighted
sum over channels, ReLU, normalisation to [0, 1]. A method (`medray.explain.methods`) is only the
function that turns that evidence into weights (pytorch-grad-cam's design).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from medray.errors import MedrayError
from medray.explain.methods import CAM_METHODS, CamMethod
from medray.explain.graph import CamGraph
from medray.explain.spatial import grid_axes, resize_grid, spatial_axes
from medray.explain.targets import CamTarget
from medray.keras_setup import tf

# Channel-masked copies of the input that Score-CAM sends through the model in one forward pass.
SCORE_BATCH = 256
# Points of Integrated Gradients' path integral (midpoint rule); each is a forward and backward
# pass of the whole batch.
IG_STEPS = 16


@dataclass(frozen=True)
class CamBatch:
    # (method, layer) -> (N, T, h, w), or (N, T, d, h, w) for volumes, float32 in [0, 1] at the layer's resolution
    maps: dict[tuple[str, str], np.ndarray]
    targets: np.ndarray  # (N, T) the class each map explains
    probabilities: np.ndarray  # (N, K)


class CamExplainer:
    """Maps for the classifier's CAM layers, differentiating the class score before softmax.

    Gradients of the softmax output vanish as confidence nears 1, which gives the empty maps the
    seed notebooks saw; the pre-softmax score (logit) does not saturate.
    """

    def __init__(self, model, cam_layers: str | Sequence[str] | None = None, methods: str | Sequence[str] = "gradcam",
                 score_batch: int = SCORE_BATCH, target: CamTarget | None = None):
        """`model`: a tf-keras or Keras 3 Sequential or Functional classifier; `cam_layers`: layer
        paths (`outer/inner` inside nested models), None for the one `find_cam_layer` picks;
        `target`: what a map differentiates (medray.explain.targets), None to infer it from the head."""
        self.methods: tuple[CamMethod, ...] = tuple(
            _method(name) for name in ((methods,) if isinstance(methods, str) else methods))
        self._graph = CamGraph(model, cam_layers, target)
        self.layers = self._graph.layers
        self.target: CamTarget = self._graph.target  # what the maps differentiate, given or read from the head
        self._score_batch = score_batch
        self._input_shape = tuple(model.inputs[0].shape[1:])
        # One compiled function per number of classes explained per image (1, or K for "all"); the
        # batch axis stays unknown so a short last batch does not retrace.
        self._compiled: dict[int, Callable] = {}
        self._compiled_probabilities = tf.function(
            lambda images: self._graph.forward(images)[1],
            input_signature=[tf.TensorSpec((None, *self._input_shape), tf.float32)])

    @property
    def keys(self) -> list[tuple[str, str]]:
        return [(method.name, layer) for method in self.methods for layer in self.layers]

    @property
    def passes_per_map(self) -> int:
        """What one image's maps cost, in model passes (one image through the model, forward):
        1 for the gradient methods (each with one backward pass), plus the CAM layers' channels
        for Score-CAM (one masked input per channel), plus IG_STEPS (each with a backward pass)
        for Integrated Gradients."""
        passes = 1
        for method in self.methods:
            if method.evidence == "masked_scores":
                passes += sum(self._graph.channels)
            elif method.evidence == "integrated_gradients":
                passes += IG_STEPS
        return passes

    def __call__(self, images: np.ndarray, targets: np.ndarray | None = None) -> CamBatch:
        """`targets`: None explains each image's predicted class; (N,) one class per image;
        (N, T) T classes per image (-1 stands for the predicted class)."""
        if targets is None:
            targets = np.full((len(images), 1), -1)
        targets = np.asarray(targets, dtype=np.int32)
        if targets.ndim == 1:
            targets = targets[:, np.newaxis]
        slots = targets.shape[1]
        if slots not in self._compiled:
            self._compiled[slots] = tf.function(self._maps, input_signature=[
                tf.TensorSpec((None, *self._input_shape), tf.float32), tf.TensorSpec((None, slots), tf.int32)])
        maps, chosen, probabilities = self._compiled[slots](tf.convert_to_tensor(images, tf.float32),
                                                            tf.convert_to_tensor(targets))
        return CamBatch(dict(zip(self.keys, (m.numpy() for m in maps))), chosen.numpy(), probabilities.numpy())

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """The model's class probabilities, compiled: the forward pass the faithfulness checks use."""
        return self._compiled_probabilities(tf.convert_to_tensor(images, tf.float32)).numpy()

    def _maps(self, images: tf.Tensor, targets: tf.Tensor):
        slots = targets.shape[1]
        with tf.GradientTape(persistent=True) as tape:
            # Watched, so that a CAM layer with no weights upstream of it is still on the tape.
            tape.watch(images)
            activations, logits, probabilities = self._graph(images)
            predicted = tf.argmax(logits, axis=1, output_type=tf.int32)
            chosen = tf.where(targets >= 0, targets, predicted[:, tf.newaxis])
            # Images of a batch are independent (inference mode), so the gradient of the batch's
            # summed score is each image's own gradient.
            scores = [tf.gather(logits, chosen[:, slot], batch_dims=1) for slot in range(slots)]
        evidence = {}
        if any(method.evidence == "gradients" for method in self.methods):
            evidence["gradients"] = [tape.gradient(scores[slot], activations) for slot in range(slots)]
        if any(method.evidence == "masked_scores" for method in self.methods):
            evidence["masked_scores"] = [self._masked_scores(images, layer_activations, chosen)
                                         for layer_activations in activations]
        if any(method.evidence == "integrated_gradients" for method in self.methods):
            evidence["integrated_gradients"] = [self._integrated_gradients(images, chosen[:, slot])
                                                for slot in range(slots)]
        del tape
        maps = []
        for method in self.methods:
            for index, layer_activations in enumerate(activations):
                per_slot = []
                for slot in range(slots):
                    if method.evidence == "integrated_gradients":
                        # the same input attribution under every CAM layer's key, computed once
                        per_slot.append(_normalise(tf.nn.relu(evidence["integrated_gradients"][slot])))
                        continue
                    if method.evidence == "gradients":
                        weights = method.weights(layer_activations, evidence["gradients"][slot][index])
                    else:
                        weights = method.weights(layer_activations, evidence["masked_scores"][index][:, slot])
                    per_slot.append(_normalise(tf.nn.relu(tf.reduce_sum(layer_activations * weights, axis=-1))))
                maps.append(tf.stack(per_slot, axis=1))
        return maps, chosen, probabilities

    def _masked_scores(self, images: tf.Tensor, activations: tf.Tensor, chosen: tf.Tensor) -> tf.Tensor:
        """(N, T, C): the target logits of the input multiplied by each channel's upsampled,
        min-max normalised activation map (Score-CAM), SCORE_BATCH masked inputs per forward pass."""
        count, channels = tf.shape(images)[0], activations.shape[-1]
        rank = activations.shape.rank
        channels_first = tf.transpose(activations, (rank - 1, *range(rank - 1)))  # (C, N, *grid)
        chunk = tf.maximum(1, self._score_batch // count)
        pieces = tf.TensorArray(tf.float32, size=0, dynamic_size=True, infer_shape=False)
        for start in tf.range(0, channels, chunk):
            # Upsampled a chunk of channels at a time: all of MobileNetV2's 1,280 channels at 96 px
            # for 24 images held 1.1 GB at once.
            low_res = channels_first[start:start + chunk]  # (k, N, *grid)
            block = resize_grid(tf.reshape(low_res, tf.concat([[-1], tf.shape(low_res)[2:], [1]], axis=0)),
                                images.shape[1:-1])  # (k * N, *input grid, 1)
            low = tf.reduce_min(block, axis=spatial_axes(block), keepdims=True)
            high = tf.reduce_max(block, axis=spatial_axes(block), keepdims=True)
            block = tf.math.divide_no_nan(block - low, high - low)[..., 0]  # each map min-max normalised
            block = tf.reshape(block, tf.concat([tf.shape(low_res)[:2], tf.shape(images)[1:-1]], axis=0))  # (k, N, *G)
            masked = images[tf.newaxis] * block[..., tf.newaxis]
            flat = tf.reshape(masked, tf.concat([[-1], tf.shape(images)[1:]], axis=0))
            logits = tf.reshape(self._masked_score(flat), (tf.shape(block)[0], count, -1))
            # (k, N, K) -> the chosen classes (k, N, T)
            pieces = pieces.write(pieces.size(), tf.gather(logits, tf.tile(chosen[tf.newaxis], (tf.shape(block)[0], 1, 1)),
                                                          batch_dims=2))
        return tf.transpose(pieces.concat(), (1, 2, 0))  # (N, T, C)


    def _integrated_gradients(self, images: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        """(N, H, W): Integrated Gradients (Sundararajan et al. 2017) of the target scores (N,),
        baseline the all-zero input, IG_STEPS midpoints of the path, summed over channels."""
        total = tf.zeros_like(images)
        for step in tf.range(IG_STEPS):
            alpha = (tf.cast(step, tf.float32) + 0.5) / IG_STEPS
            scaled = images * alpha
            with tf.GradientTape() as tape:
                tape.watch(scaled)
                scores = tf.gather(self._graph.forward(scaled)[0], targets, batch_dims=1)
            total += tape.gradient(scores, scaled)
        return tf.reduce_sum(images * total / IG_STEPS, axis=-1)

    def _masked_score(self, images: tf.Tensor) -> tf.Tensor:
        return self._graph.masked_scores(images)


def explain_in_batches(explainer: CamExplainer, images: np.ndarray, targets: np.ndarray | None,
                       batch_size: int) -> CamBatch:
    """`explainer(images, targets)` `batch_size` images at a time, so that memory (Score-CAM's
    masked copies above all) is bounded by the batch, not by the number of images."""
    parts = [explainer(images[start:start + batch_size], None if targets is None else targets[start:start + batch_size])
             for start in range(0, len(images), batch_size)]
    return CamBatch({key: np.concatenate([part.maps[key] for part in parts]) for key in parts[0].maps},
                    np.concatenate([part.targets for part in parts]),
                    np.concatenate([part.probabilities for part in parts]))


def _normalise(maps: tf.Tensor) -> tf.Tensor:
    peaks = tf.reduce_max(maps, axis=grid_axes(maps), keepdims=True)
    return tf.math.divide_no_nan(maps, peaks)


def _method(name: str) -> CamMethod:
    if name not in CAM_METHODS:
        raise MedrayError(f"explain.method={name!r} is not a CAM method; choose from {', '.join(CAM_METHODS)}")
    return CAM_METHODS[name]
