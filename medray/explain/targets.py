"""CAM targets: *what* a class activation map differentiates, apart from *how* the map is made.

pytorch-grad-cam's `ClassifierOutputTarget(k)` and `BinaryClassifierOutputTarget(k)` are callables
that pick one image's score; here a target is the rule for a whole batch, run inside the compiled
CAM function: it turns the head's pre-activation output (N, units) into per-class scores (N, K),
and the explainer gathers the classes it was asked for from them. The same Grad-CAM, Grad-CAM++,
HiResCAM or Score-CAM then serves every head:

| target               | head               | score of class/label k                 | probabilities      |
| -------------------- | ------------------ | -------------------------------------- | ------------------ |
| SoftmaxClassTarget   | K softmax units    | logit z_k (before softmax)             | softmax(z)         |
| BinarySigmoidTarget  | 1 sigmoid unit     | -s for class 0, +s for class 1         | [1 - p, p]         |
| SigmoidLabelTarget   | K sigmoid units    | logit z_k of label k                   | sigmoid(z), each   |

Scores before the squashing activation do not saturate: the gradient of a softmax or sigmoid
output vanishes as it nears 0 or 1, which gives empty maps (Selvaraju et al. 2017 use the score
before softmax for this reason).
"""

from __future__ import annotations

from dataclasses import dataclass

from medray.keras_setup import tf


@dataclass(frozen=True)
class CamTarget:
    """Base: `class_scores(z)` -> (N, K) scores to differentiate; `probabilities(z)` -> (N, K)."""

    name = ""

    def class_scores(self, logits: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def probabilities(self, logits: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def masked_scores(self, logits: tf.Tensor) -> tf.Tensor:
        """What Score-CAM compares across channel-masked inputs (Wang et al. 2020): the class scores."""
        return self.class_scores(logits)


@dataclass(frozen=True)
class SoftmaxClassTarget(CamTarget):
    """The pre-softmax score of class k."""

    name = "softmax class score"

    def class_scores(self, logits):
        return logits

    def probabilities(self, logits):
        return tf.nn.softmax(logits)


@dataclass(frozen=True)
class BinarySigmoidTarget(CamTarget):
    """A single sigmoid unit read as two classes: class 1's score is the logit s, class 0's is -s,
    their probabilities p and 1 - p."""

    name = "+-logit of one sigmoid"

    def class_scores(self, logits):
        return tf.concat([-logits, logits], axis=1)

    def probabilities(self, logits):
        probability = tf.sigmoid(logits)
        return tf.concat([1 - probability, probability], axis=1)

    def masked_scores(self, logits):
        # Score-CAM's paper scores a masked input by its probabilities; for one sigmoid unit those
        # are p and 1 - p (a softmax over a single output would be 1 for every masked input).
        return self.probabilities(logits)


@dataclass(frozen=True)
class SigmoidLabelTarget(SoftmaxClassTarget):
    """The logit of label k of a multi-label head (independent sigmoids): the same scores as a
    softmax head's, other probabilities."""

    name = "logit of label k"

    def probabilities(self, logits):
        return tf.sigmoid(logits)


def target_for_head(activation: str, units: int) -> CamTarget:
    """The target a classifier's head implies, for a model trained elsewhere: one sigmoid unit is
    binary, several sigmoid units are independent labels, anything else a softmax over classes."""
    if activation == "sigmoid":
        return BinarySigmoidTarget() if units == 1 else SigmoidLabelTarget()
    return SoftmaxClassTarget()
