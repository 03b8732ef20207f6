"""Every picture of the report, one function each: arrays in, a PNG file out.

Plots are drawn with matplotlib's object API on the Agg backend (no display on workers or CI),
and every figure is closed after saving so that a sweep of many runs does not pile up memory.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

DPI = 110
RIGHT, WRONG = "#2a9d8f", "#e76f51"


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path


def _square_side(class_names: list[str]) -> float:
    return 3.2 + 0.8 * len(class_names)


def plot_confusion_matrix(matrix, class_names: list[str], path: Path, normalised: bool = False) -> Path:
    side = _square_side(class_names)
    figure, axes = plt.subplots(figsize=(side, side))
    ConfusionMatrixDisplay(np.asarray(matrix), display_labels=class_names).plot(
        ax=axes, cmap="Blues", colorbar=False, xticks_rotation=30, values_format=".2f" if normalised else "d")
    axes.set_title("Confusion matrix, share of each true class" if normalised else "Confusion matrix (counts)")
    return _save(figure, path)


def plot_roc_curves(labels: np.ndarray, probabilities: np.ndarray, class_names: list[str], path: Path) -> Path:
    side = _square_side(class_names)
    figure, axes = plt.subplots(figsize=(side + 1, side))
    for index, name in enumerate(class_names):
        positives = labels == index
        if positives.all() or not positives.any():
            continue  # no curve without both a positive and a negative row
        RocCurveDisplay.from_predictions(positives, probabilities[:, index], name=name, ax=axes,
                                         plot_chance_level=index == len(class_names) - 1)
    axes.set_title("ROC curves, one class against the rest")
    axes.set_xlabel("False positive rate")
    axes.set_ylabel("True positive rate")
    axes.legend(loc="lower right", fontsize="small")
    return _save(figure, path)


def plot_label_roc_curves(labels: np.ndarray, probabilities: np.ndarray, label_names: list[str], path: Path) -> Path:
    """Multi-label: one ROC curve per label over the images where it is known (labels (N, K) with
    1/0/-1, probabilities (N, K)), its AUC in the legend; a label without a positive or a negative
    test image is listed in the legend as undefined instead of drawn."""
    figure, axes = plt.subplots(figsize=(7, 7))
    # Fourteen ChestX-ray14 findings outrun the ten default colours; tab20's dark shades first, so
    # that neighbouring labels do not share a hue.
    axes.set_prop_cycle(color=plt.cm.tab20.colors[::2] + plt.cm.tab20.colors[1::2])
    drawn = 0
    for index, name in enumerate(label_names):
        known = labels[:, index] != -1
        truth = labels[known, index] == 1
        if truth.all() or not truth.any():
            missing = "positive" if not truth.any() else "negative"
            axes.plot([], [], color="grey", linestyle=":", label=f"{name}: undefined, no {missing} test image")
            continue
        RocCurveDisplay.from_predictions(truth, probabilities[known, index], name=name, ax=axes)
        drawn += 1
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance (AUC = 0.5)")
    axes.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="False positive rate", ylabel="True positive rate",
             title=f"ROC curve of each label ({drawn} of {len(label_names)} defined)")
    # Curves hug the upper left, so the lower right is free for a legend of up to ~15 labels.
    axes.legend(loc="lower right", fontsize="x-small" if len(label_names) > 8 else "small")
    return _save(figure, path)


def plot_reliability_diagram(bins: pd.DataFrame, ece: float, path: Path, title: str = "") -> Path:
    """Accuracy against mean confidence per bin (`bins`: medray.report.metrics.calibration_bins);
    `title` follows "Reliability diagram", e.g. "after temperature scaling"."""
    figure, axes = plt.subplots(figsize=(5.5, 5))
    centres = (bins["low"] + bins["high"]) / 2
    width = float((bins["high"] - bins["low"]).iloc[0])
    filled = bins["rows"] > 0
    axes.bar(centres[filled], bins["accuracy"][filled], width=width * 0.92, color="#457b9d",
             edgecolor="white", label="accuracy in bin")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    axes.plot(bins["confidence"][filled], bins["accuracy"][filled], "o", color="#1d3557", markersize=4,
              label="mean confidence in bin")
    for centre, accuracy, rows in zip(centres[filled], bins["accuracy"][filled], bins["rows"][filled]):
        axes.annotate(str(rows), (centre, accuracy), textcoords="offset points", xytext=(0, 3),
                      ha="center", fontsize=7, color="#555555")
    axes.set(xlim=(0, 1), ylim=(0, 1.05), xlabel="Confidence (top class probability)", ylabel="Accuracy",
             title=f"Reliability diagram{', ' + title if title else ''} (ECE {ece:.3f})")
    axes.legend(loc="upper left", fontsize="small")
    return _save(figure, path)


def plot_confidence_histogram(confidence: np.ndarray, correct: np.ndarray, path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(6.5, 4))
    edges = np.linspace(0, 1, 21)
    axes.hist(confidence[correct], bins=edges, color=RIGHT, alpha=0.75, label=f"right ({int(correct.sum())})")
    axes.hist(confidence[~correct], bins=edges, color=WRONG, alpha=0.75, label=f"wrong ({int((~correct).sum())})")
    axes.set(xlabel="Confidence (top class probability)", ylabel="Test images",
             title="Confidence of right and wrong predictions")
    axes.legend(loc="upper left")
    return _save(figure, path)


def plot_recall_against_frequency(class_names: list[str], recall: list[float], share: list[float],
                                  share_label: str, path: Path) -> Path:
    """Does the model fail the rare classes? Each class at (its share of the data, its recall)."""
    figure, axes = plt.subplots(figsize=(6.5, 4.5))
    axes.scatter(share, recall, s=60, color="#457b9d", zorder=3)
    for name, x, y in zip(class_names, share, recall):
        if np.isnan(y):  # a class without test images has no recall to place
            continue
        axes.annotate(name, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    axes.set(xlim=(0, max(1.0, max(share) * 1.1)), ylim=(-0.03, 1.08), xlabel=share_label, ylabel="Test recall",
             title="Recall of each class against its frequency")
    axes.grid(alpha=0.3)
    return _save(figure, path)


def plot_training_curves(history: pd.DataFrame, path: Path) -> Path:
    """One panel per metric (loss, accuracy, AUC...), train against validation, by epoch."""
    metrics = [name for name in history.columns
               if name not in ("epoch",) and not name.startswith("val_") and f"val_{name}" in history.columns]
    metrics = metrics or [name for name in history.columns if name != "epoch"][:1]
    epochs = history["epoch"] if "epoch" in history.columns else pd.Series(range(1, len(history) + 1))
    figure, panels = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    for axes, name in zip(panels[0], metrics):
        axes.plot(epochs, history[name], marker="o", label="train")
        if f"val_{name}" in history.columns:
            axes.plot(epochs, history[f"val_{name}"], marker="o", label="validation")
        axes.set(xlabel="Epoch", title=name.replace("_", " "))
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    return _save(figure, path)


def plot_class_distribution(class_counts: dict[str, dict[str, int]], path: Path) -> Path:
    """Images per class in each split, side by side: the imbalance a person should know about."""
    table = pd.DataFrame(class_counts)  # rows: classes, columns: splits
    figure, axes = plt.subplots(figsize=(1.6 + 1.3 * len(table), 3.8))
    table.plot.bar(ax=axes, rot=20, width=0.8, color=["#457b9d", "#a8dadc", "#e9c46a"][: len(table.columns)])
    axes.set(ylabel="Images", title="Images per class and split")
    axes.legend(title="split", fontsize="small")
    return _save(figure, path)


def plot_model_comparison(table: pd.DataFrame, metric_names: list[str], path: Path) -> Path:
    """A grouped bar per model: the sweep's headline metrics side by side."""
    figure, axes = plt.subplots(figsize=(4 + 1.2 * len(table), 4))
    table[metric_names].plot.bar(ax=axes, rot=20, width=0.8)
    axes.set(ylim=(0, 1.05), ylabel="Test score", title="Models side by side")
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))  # outside: bars reach 1.0
    axes.grid(axis="y", alpha=0.3)
    return _save(figure, path)


def plot_spread_by_correctness(groups: dict[str, dict[str, np.ndarray]], path: Path) -> Path:
    """Map stability against correctness, one panel per method: a box and every image (jittered dots)
    of the map spread (test-time augmentation's mean per-pixel SD, medray.explain.uncertainty) on
    correct and on misclassified predictions, with n under each group.
    `groups`: {method: {"correct": (n,), "misclassified": (m,)}}."""
    figure, axes = plt.subplots(1, len(groups), figsize=(3.6 * len(groups) + 0.6, 4.2), squeeze=False, sharey=True)
    rng = np.random.default_rng(0)  # the jitter only, so the same run draws the same picture
    for axis, (method, by_group) in zip(axes[0], groups.items()):
        names = ["correct", "misclassified"]
        values = [np.asarray(by_group.get(name, []), float) for name in names]
        shown = [index for index, group in enumerate(values) if group.size]
        if shown:
            axis.boxplot([values[i] for i in shown], positions=[i + 1 for i in shown], widths=0.5,
                         showfliers=False, medianprops={"color": "black"})
        for index, (group, colour) in enumerate(zip(values, (RIGHT, WRONG))):
            axis.scatter(index + 1 + rng.uniform(-0.15, 0.15, group.size), group, s=12, color=colour, alpha=0.7)
        axis.set_xticks([1, 2], [f"{name}\n(n={group.size})" for name, group in zip(names, values)])
        axis.set_xlim(0.4, 2.6)
        axis.set_title(method)
    axes[0][0].set_ylabel("Map spread (mean per-pixel SD across passes)")
    figure.suptitle("Does the map move more when the model is wrong?", fontsize=11)
    return _save(figure, path)
