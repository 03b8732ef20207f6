"""The shape of the problem a run solves, as one object every stage asks.

Single-label, binary-sigmoid and multi-label classification differ in five answers: how labels are
encoded for Keras, the head's activation and loss, how outputs become predictions, which metrics
apply, and which score a class activation map differentiates. Each task kind gives all five, so no
stage branches on the kind itself.

| task          | head                 | label of one image            | prediction                 |
| ------------- | -------------------- | ----------------------------- | -------------------------- |
| single_label  | K softmax units      | class index                   | argmax                     |
| binary        | 1 sigmoid unit       | class index 0 or 1            | p >= 0.5 (argmax of [1-p, p]) |
| multi_label   | K sigmoid units      | K values: 1, 0, -1 (unknown)  | p_k >= threshold_k         |

Probabilities are always (N, K) per class or label: a binary head's p becomes [1 - p, p], so every
single-label metric, plot and report applies to binary runs unchanged.

Importing this module does not import TensorFlow; the methods that build Keras objects do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from medray.errors import MedrayError

TASK_KINDS = ("single_label", "binary", "multi_label")
# A multi-label entry that is neither present nor absent (CheXpert's "uncertain" under U-Ignore):
# masked out of the loss and the metrics.
UNKNOWN = -1


@dataclass(frozen=True)
class Head:
    """The classifier's output layer: `units` Dense units with `activation` (softmax or sigmoid)."""

    units: int
    activation: str


@dataclass(frozen=True)
class Task:
    """Base of the task kinds; `class_names` are the classes (single-label, binary) or labels."""

    class_names: tuple[str, ...]
    kind: ClassVar[str] = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def head(self) -> Head:
        raise NotImplementedError

    @property
    def label_shape(self) -> tuple[int, ...]:
        """Shape of one image's label in the decoded rows: () a class index, (K,) a label vector."""
        return ()

    @property
    def multi_label(self) -> bool:
        return False

    def keras_targets(self, labels, class_weights: list[float]):
        """(y_true, per-sample weight) for Keras from a batch of decoded labels (a tf.Tensor)."""
        raise NotImplementedError

    def loss(self, train_config, positive_weights: list[float] | None = None):
        """The Keras loss `train_config.loss` names for this head, one value per image (N,):
        cross-entropy, its focal form, or hard example mining over cross-entropy
        (medray.train.losses). `positive_weights`: per label, multi-label only."""
        from medray.train.losses import HardExampleMining

        gamma = train_config.focal_gamma if train_config.loss == "focal" else 0.0
        alpha = train_config.focal_alpha if train_config.loss == "focal" else None
        loss = self.cross_entropy(train_config.label_smoothing, gamma, alpha, positive_weights)
        return HardExampleMining(loss, train_config.ohem_fraction) if train_config.loss == "ohem" else loss

    def cross_entropy(self, label_smoothing: float, focal_gamma: float, focal_alpha: float | None,
                      positive_weights: list[float] | None):
        """This head's cross-entropy, focal when `focal_gamma` > 0 (Lin et al. 2017)."""
        raise NotImplementedError

    def keras_metrics(self) -> list:
        """Training metrics, named `accuracy` and `auc` for every task (so val_auc can be monitored)."""
        raise NotImplementedError

    def cam_target(self):
        """The CamTarget (medray.explain.targets) that turns this head's scores into per-class scores."""
        raise NotImplementedError

    def class_probabilities(self, outputs: np.ndarray) -> np.ndarray:
        """(N, K) per-class (or per-label) probabilities from the model's outputs (N, head units)."""
        return outputs

    def predictions(self, probabilities: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
        """(N,) class indices, or (N, K) 0/1 for multi-label, from (N, K) probabilities."""
        return probabilities.argmax(axis=1)

    # --- what evaluation asks ------------------------------------------------------------------

    def prediction_table(self, row_ids: np.ndarray, labels: np.ndarray, probabilities: np.ndarray,
                         thresholds=None):
        """predictions.parquet: one row per image (medray.report.metrics.class_prediction_table)."""
        from medray.report.metrics import class_prediction_table

        return class_prediction_table(row_ids, labels, probabilities, list(self.class_names))

    def metrics(self, predictions, thresholds=None) -> dict:
        """metrics.json from the predictions table: accuracy, macro F1, ROC AUC, calibration, ..."""
        from medray.report.metrics import class_metrics

        return class_metrics(predictions, list(self.class_names))

    def fit_temperature(self, validation_predictions) -> dict | None:
        """calibration.json: temperature scaling (Guo et al. 2017, medray.calibration) fitted on the
        validation split's predictions table, one T shared by the classes (a binary head's [1 - p, p]
        scaled as a softmax is its logit over T); None when the table has no labelled row."""
        from medray.calibration import calibration_record, fit_softmax_temperature

        labels = validation_predictions["label"].to_numpy().astype(np.int64)
        if not (labels >= 0).any():
            return None
        probabilities = np.stack(validation_predictions["probabilities"].to_numpy())
        return calibration_record([fit_softmax_temperature(labels, probabilities)], "classes",
                                  list(self.class_names), int((labels >= 0).sum()))

    def apply_temperature(self, probabilities: np.ndarray, temperatures: np.ndarray) -> np.ndarray:
        """(N, K) calibrated probabilities from (N, K) probabilities and the fitted temperatures."""
        from medray.calibration import scale_softmax

        return scale_softmax(probabilities, float(np.asarray(temperatures).reshape(-1)[0]))

    def choose_thresholds(self, validation_predictions) -> dict | None:
        """Decision thresholds chosen on the validation split (`validation_predictions()` returns
        its predictions table, called only if the task has thresholds); None where it has none:
        single-label and binary predictions are the most probable class."""
        return None

    def describe_metrics(self, metrics: dict, test_counts: list[int]) -> str:
        """The summary's test line."""
        chance = max(test_counts) / max(1, sum(test_counts))
        auc = "n/a" if metrics["roc_auc_ovr"] is None else f"{metrics['roc_auc_ovr']:.4f}"
        return (f"accuracy {metrics['accuracy']:.4f} (majority class {chance:.4f})  "
                f"macro F1 {metrics['macro_f1']:.4f}  ROC AUC {auc}")

    def balance(self, train_labels: np.ndarray, class_balance: str) -> dict[str, list[float]]:
        """How the loss balances rare classes (train.class_balance "weights"): `class_weights` per
        class, n / (k * n_c) as scikit-learn's "balanced"; empty otherwise (with "oversample" the
        data is balanced already). `train_labels`: the training split's labels, (N,) or (N, K)."""
        if class_balance != "weights":
            return {"class_weights": []}
        counts = np.bincount(np.asarray(train_labels, dtype=np.int64), minlength=self.num_classes).astype(np.float64)
        present = counts > 0
        weights = np.zeros_like(counts)
        weights[present] = counts.sum() / (present.sum() * counts[present])
        return {"class_weights": weights.tolist()}

    def describe(self) -> str:
        return f"{self.kind} ({self.num_classes} {'labels' if self.multi_label else 'classes'})"

    def check_config(self, config) -> None:
        """Raise MedrayError, naming the key, for settings this task cannot train with."""

    # --- what the explain stage asks: which maps to make and how to file them -------------------

    def cam_slots(self, mode: str, labels: np.ndarray) -> np.ndarray | None:
        """(N, T) classes to explain per image for explain.target `mode` (predicted, true, all);
        None: each image's predicted class (chosen inside the compiled CAM function)."""
        count = len(labels)
        return {"predicted": None, "true": labels,
                "all": np.tile(np.arange(self.num_classes), (count, 1))}[mode]

    def sample_slots(self, mode: str, labels: np.ndarray) -> np.ndarray | None:
        """The classes the checks' sample explains (the bulk job's, for a single-label task)."""
        return self.cam_slots(mode, labels)

    def keep_maps(self, mode: str, labels: np.ndarray, targets: np.ndarray, probabilities: np.ndarray,
                  thresholds: np.ndarray | None) -> np.ndarray:
        """(N, T) which of the computed maps are kept: every one, for a single-label task."""
        return np.ones(targets.shape, bool)

    def map_truth(self, labels: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """(N, T) the `label` column of each map: the image's true class (-1: unlabelled)."""
        return np.broadcast_to(np.asarray(labels)[:, np.newaxis], targets.shape)

    def map_prediction(self, probabilities: np.ndarray, targets: np.ndarray,
                       thresholds: np.ndarray | None) -> np.ndarray:
        """(N, T) the `prediction` column of each map: the image's predicted class."""
        return np.broadcast_to(self.predictions(probabilities)[:, np.newaxis], targets.shape)

    def check_groups(self, labels: np.ndarray, targets: np.ndarray, predictions: np.ndarray) -> np.ndarray:
        """(N,) the class a sampled image's faithfulness figures are grouped under: its true class,
        or for an unlabelled image (-1) its predicted class (`predictions`, (N,))."""
        return np.where(np.asarray(labels) >= 0, labels, predictions)

    def overlay_folders(self, truth: np.ndarray, predicted: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """The class folder of each map's overlay: the image's true class (unlabelled images, -1:
        the predicted class)."""
        return np.where(truth >= 0, truth, predicted)

    def names_target_in_file(self, mode: str) -> bool:
        """Whether overlay file names carry the class explained (several maps per image and folder)."""
        return mode == "all"

    def gallery_maps(self, label, prediction, target, duplicated) -> np.ndarray:
        """Which maps the galleries show: with several maps per image, the predicted class's."""
        return ~duplicated | (target == prediction)

    def gallery_groups(self, label, prediction, target) -> tuple[np.ndarray, np.ndarray]:
        """(gallery class, group) per map: labelled images under their true class, correct or
        misclassified; unlabelled ones (label -1) under the class the model predicts."""
        unlabelled = label < 0
        group = np.where(unlabelled, "predicted", np.where(label == prediction, "correct", "misclassified"))
        return np.where(unlabelled, prediction, label), group

    def gallery_caption(self, label: int, prediction: int, target: int, confidence: float) -> tuple[str, bool | None]:
        """A gallery tile's caption and whether it is right (None: unlabelled)."""
        truth = "unlabelled" if label < 0 else f"true {self.class_names[label]}"
        return f"{truth}\npred {self.class_names[prediction]} ({confidence:.2f})", None if label < 0 else label == prediction


@dataclass(frozen=True)
class SingleLabelTask(Task):
    """One class per image, K softmax units, categorical cross-entropy (today's default)."""

    kind: ClassVar[str] = "single_label"

    @property
    def head(self) -> Head:
        return Head(self.num_classes, "softmax")

    def keras_targets(self, labels, class_weights):
        from medray.keras_setup import tf

        weights = tf.constant(class_weights or [1.0] * self.num_classes, dtype=tf.float32)
        return tf.one_hot(labels, self.num_classes), tf.gather(weights, labels)

    def cross_entropy(self, label_smoothing, focal_gamma, focal_alpha, positive_weights):
        from medray.keras_setup import keras

        if focal_gamma:
            return keras.losses.CategoricalFocalCrossentropy(alpha=1.0, gamma=focal_gamma,
                                                             label_smoothing=label_smoothing)
        return keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)

    def check_config(self, config) -> None:
        if config.train.loss == "focal" and config.train.focal_alpha is not None:
            raise MedrayError(f"train.focal_alpha={config.train.focal_alpha}: alpha weights the positives of a "
                              "sigmoid head (task: binary or multi_label); a softmax head balances its classes "
                              "with train.class_balance, so remove focal_alpha")

    def keras_metrics(self) -> list:
        from medray.keras_setup import keras

        return [keras.metrics.CategoricalAccuracy(name="accuracy"),
                keras.metrics.AUC(multi_label=True, num_labels=self.num_classes, name="auc")]

    def cam_target(self):
        from medray.explain.targets import SoftmaxClassTarget

        return SoftmaxClassTarget()


@dataclass(frozen=True)
class BinaryTask(Task):
    """Two classes and one sigmoid unit, binary cross-entropy: p is the probability of the second
    class (class_names[1]); class 0's CAM differentiates -logit, class 1's +logit."""

    kind: ClassVar[str] = "binary"

    def __post_init__(self):
        if self.num_classes != 2:
            raise MedrayError(f"task=binary needs exactly two classes, the data has {self.num_classes} "
                              f"({', '.join(self.class_names)}); use task: single_label (softmax) instead")

    @property
    def head(self) -> Head:
        return Head(1, "sigmoid")

    def keras_targets(self, labels, class_weights):
        from medray.keras_setup import tf

        weights = tf.constant(class_weights or [1.0, 1.0], dtype=tf.float32)
        return tf.cast(labels, tf.float32)[:, tf.newaxis], tf.gather(weights, labels)

    def cross_entropy(self, label_smoothing, focal_gamma, focal_alpha, positive_weights):
        from medray.keras_setup import keras

        if focal_gamma or focal_alpha is not None:
            return keras.losses.BinaryFocalCrossentropy(
                apply_class_balancing=focal_alpha is not None, alpha=0.25 if focal_alpha is None else focal_alpha,
                gamma=focal_gamma, label_smoothing=label_smoothing)
        return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)

    def keras_metrics(self) -> list:
        from medray.keras_setup import keras

        return [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]

    def class_probabilities(self, outputs: np.ndarray) -> np.ndarray:
        return np.concatenate([1 - outputs, outputs], axis=1)

    def cam_target(self):
        from medray.explain.targets import BinarySigmoidTarget

        return BinarySigmoidTarget()


@dataclass(frozen=True)
class MultiLabelTask(Task):
    """K independent findings per image, K sigmoid units, binary cross-entropy with per-label
    positive weights from the training split (`pos_weight` of a weighted BCE: negatives over
    positives, as in Wang et al. 2017, ChestX-ray8); UNKNOWN entries are masked out."""

    kind: ClassVar[str] = "multi_label"

    @property
    def head(self) -> Head:
        return Head(self.num_classes, "sigmoid")

    @property
    def label_shape(self) -> tuple[int, ...]:
        return (self.num_classes,)

    @property
    def multi_label(self) -> bool:
        return True

    def keras_targets(self, labels, class_weights):
        from medray.keras_setup import tf

        labels = tf.cast(labels, tf.float32)
        return labels, tf.ones_like(labels[:, 0])

    def cross_entropy(self, label_smoothing, focal_gamma, focal_alpha, positive_weights):
        from medray.train.losses import MaskedBinaryCrossentropy

        return MaskedBinaryCrossentropy(positive_weights or [1.0] * self.num_classes, label_smoothing=label_smoothing,
                                        focal_gamma=focal_gamma, focal_alpha=focal_alpha)

    def keras_metrics(self) -> list:
        from medray.train.losses import MaskedAUC, MaskedBinaryAccuracy

        return [MaskedBinaryAccuracy(name="accuracy"),
                MaskedAUC(multi_label=True, num_labels=self.num_classes, name="auc")]

    def cam_target(self):
        from medray.explain.targets import SigmoidLabelTarget

        return SigmoidLabelTarget()

    def predictions(self, probabilities: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
        thresholds = np.full(self.num_classes, 0.5) if thresholds is None else np.asarray(thresholds)
        return (probabilities >= thresholds).astype(np.int8)

    # A multi-label image's maps: one per label it is predicted to have (probability at or above
    # the label's threshold) plus its top label, all computed in one pass (T = K) and then filtered.
    # A map's `label` and `prediction` columns hold the truth (1, 0, -1) and the prediction (1, 0)
    # of the label it explains (its `target`).

    def cam_slots(self, mode: str, labels: np.ndarray) -> np.ndarray | None:
        return np.tile(np.arange(self.num_classes), (len(labels), 1))

    def check_config(self, config) -> None:
        if config.train.class_balance == "oversample":
            raise MedrayError("train.class_balance=oversample: oversampling repeats the rows of a class, and a "
                              "multi-label image belongs to several or none; multi-label runs balance each label "
                              "by weighting its positives (train.class_balance: weights)")

    def sample_slots(self, mode, labels):
        return None  # each image's top label: the checks cost passes per map, so one map per image

    def keep_maps(self, mode, labels, targets, probabilities, thresholds):
        top = targets == probabilities.argmax(axis=1)[:, np.newaxis]
        if mode == "all":
            return np.ones(targets.shape, bool)
        if mode == "true":
            return (np.take_along_axis(np.asarray(labels), targets, axis=1) == 1) | top
        return (self.map_prediction(probabilities, targets, thresholds) == 1) | top

    def map_truth(self, labels, targets):
        return np.take_along_axis(np.asarray(labels), targets, axis=1)

    def map_prediction(self, probabilities, targets, thresholds):
        return np.take_along_axis(self.predictions(probabilities, thresholds), targets, axis=1)

    def check_groups(self, labels, targets, predictions):
        """The label a sampled map explains (the sample explains each image's top label)."""
        return targets[:, 0]

    def overlay_folders(self, truth, predicted, targets):
        """The label each map explains: one folder per label."""
        return targets

    def names_target_in_file(self, mode):
        return False

    def gallery_maps(self, label, prediction, target, duplicated):
        return np.ones(len(label), bool)

    def gallery_groups(self, label, prediction, target):
        """Per label: maps of images predicted to have it, "correct" (true positives) or
        "misclassified" (false positives); a top label below its threshold counts as predicted
        absent, so its map is correct when the label is absent."""
        return target, np.where(label == prediction, "correct", "misclassified")

    def gallery_caption(self, label, prediction, target, confidence):
        truth = {1: "present", 0: "absent"}.get(int(label), "unknown")
        return (f"{self.class_names[target]}: {truth}\npred {'present' if prediction else 'absent'}",
                None if label < 0 else label == prediction)

    def prediction_table(self, row_ids, labels, probabilities, thresholds=None):
        from medray.report.multilabel_metrics import multilabel_prediction_table

        thresholds = np.full(self.num_classes, 0.5) if thresholds is None else thresholds  # before they are chosen
        return multilabel_prediction_table(row_ids, labels, probabilities, thresholds, list(self.class_names))

    def metrics(self, predictions, thresholds=None) -> dict:
        from medray.report.multilabel_metrics import multilabel_metrics

        from medray.report.multilabel_metrics import multilabel_prediction_arrays

        labels, probabilities = multilabel_prediction_arrays(predictions)
        return multilabel_metrics(labels, probabilities, np.asarray(thresholds), list(self.class_names))

    def fit_temperature(self, validation_predictions):
        """One temperature per label (each sigmoid is calibrated on its own known validation entries;
        1.0 for a label without any), so that a rare finding is not scaled by a common one's T."""
        from medray.calibration import calibration_record, fit_sigmoid_temperature
        from medray.report.multilabel_metrics import multilabel_prediction_arrays

        labels, probabilities = multilabel_prediction_arrays(validation_predictions)
        known = labels != UNKNOWN
        if not known.any():
            return None
        temperatures = [fit_sigmoid_temperature(labels[known[:, k], k], probabilities[known[:, k], k])
                        if known[:, k].any() else 1.0 for k in range(self.num_classes)]
        return calibration_record(temperatures, "label", list(self.class_names), int(known.any(axis=1).sum()))

    def apply_temperature(self, probabilities, temperatures):
        from medray.calibration import scale_sigmoid

        return scale_sigmoid(probabilities, temperatures)

    def choose_thresholds(self, validation_predictions):
        """Per label, the threshold with the best F1 on the validation split (thresholds.json)."""
        from medray.report.multilabel_metrics import choose_thresholds, thresholds_record

        from medray.report.multilabel_metrics import multilabel_prediction_arrays

        labels, probabilities = multilabel_prediction_arrays(validation_predictions())
        thresholds, reasons = choose_thresholds(labels, probabilities, list(self.class_names))
        return thresholds_record(list(self.class_names), thresholds, reasons)

    def describe_metrics(self, metrics, test_counts):
        """Mean ROC AUC over labels (the figure ChestX-ray14 papers report), then the rest."""
        def number(key):
            value = metrics.get(key)
            return "n/a" if value is None else f"{value:.4f}"

        return (f"mean ROC AUC {number('mean_roc_auc')}  mean AP {number('mean_average_precision')}  "
                f"macro F1 {number('macro_f1')}  Hamming loss {number('hamming_loss')}  "
                f"exact match {number('exact_match_ratio')}")

    def balance(self, train_labels: np.ndarray, class_balance: str) -> dict[str, list[float]]:
        """Per-label `positive_weights` (negatives / positives among known entries) under "weights";
        1.0 each under "none". Class weights do not apply: an image carries several labels."""
        labels = np.asarray(train_labels, dtype=np.int64).reshape(-1, self.num_classes)
        if class_balance != "weights":
            return {"class_weights": [], "positive_weights": [1.0] * self.num_classes}
        return {"class_weights": [],
                "positive_weights": positive_weights((labels == 1).sum(axis=0).tolist(),
                                                     (labels >= 0).sum(axis=0).tolist())}


TASKS: dict[str, type[Task]] = {task.kind: task for task in (SingleLabelTask, BinaryTask, MultiLabelTask)}


def make_task(kind: str, class_names, data_multi_label: bool = False) -> Task:
    """The task a run trains: `kind` from the config (`auto` follows the data: multi-label when the
    labels are lists or multi-hot vectors, single-label otherwise).

    Raises MedrayError when the config and the data disagree (single-label data with
    task=multi_label, multi-label data with task=single_label or binary).
    """
    if kind == "auto":
        kind = "multi_label" if data_multi_label else "single_label"
    if kind not in TASKS:
        raise MedrayError(f"task={kind!r} is not a task kind; choose one of auto, {', '.join(TASKS)}")
    if (kind == "multi_label") != data_multi_label:
        found = "several labels per image" if data_multi_label else "one class per image"
        raise MedrayError(f"task={kind}: the data has {found}; set task: auto (or "
                          f"{'multi_label' if data_multi_label else 'single_label or binary'})")
    return TASKS[kind](tuple(class_names))


def positive_weights(positives: list[int], known: list[int]) -> list[float]:
    """Per-label weight of a positive entry: negatives / positives among the known entries of the
    training split (1.0 for a label without positives or without negatives, which the weight
    cannot balance)."""
    weights = []
    for count, total in zip(positives, known):
        negatives = total - count
        weights.append(float(negatives) / count if count and negatives else 1.0)
    return weights
