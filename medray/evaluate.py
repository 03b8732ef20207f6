"""Predict the test split with a Ray Data actor pool, then score it with scikit-learn."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # runs on headless workers and CI
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import ray
from sklearn.metrics import ConfusionMatrixDisplay, accuracy_score, confusion_matrix, f1_score, roc_auc_score

from medray.models.actor import ModelActor


class Predictor(ModelActor):
    def __call__(self, batch: dict) -> dict:
        probabilities = self.model.predict_on_batch(self.model_input(batch["pixels"]))
        return {"row_id": batch["row_id"], "label": batch["label"],
                "probabilities": np.asarray(probabilities, dtype=np.float32)}


def predict(decoded: ray.data.Dataset, model_bytes: bytes, backbone_name: str, class_names: list[str],
            batch_size: int, concurrency: int) -> pd.DataFrame:
    """One row per image: row_id, label, prediction, confidence and the class probabilities."""
    scored = decoded.map_batches(
        Predictor, fn_constructor_kwargs={"model_bytes": model_bytes, "backbone_name": backbone_name},
        batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=concurrency),
    )
    batches = list(scored.iter_batches(batch_size=None))
    probabilities = np.concatenate([batch["probabilities"] for batch in batches])
    labels = np.concatenate([batch["label"] for batch in batches])
    predictions = probabilities.argmax(axis=1)
    frame = pd.DataFrame({
        "row_id": np.concatenate([batch["row_id"] for batch in batches]).astype(str),
        "label": labels,
        "label_name": [class_names[label] for label in labels],
        "prediction": predictions,
        "prediction_name": [class_names[index] for index in predictions],
        "confidence": probabilities.max(axis=1),
        "probabilities": list(probabilities),
    })
    return frame.sort_values("row_id", ignore_index=True)


def compute_metrics(predictions: pd.DataFrame, class_names: list[str]) -> dict:
    labels = predictions["label"].to_numpy()
    predicted = predictions["prediction"].to_numpy()
    probabilities = np.stack(predictions["probabilities"].to_numpy())
    indices = list(range(len(class_names)))
    return {
        "rows": int(len(labels)),
        "accuracy": float(accuracy_score(labels, predicted)),
        "macro_f1": float(f1_score(labels, predicted, average="macro", labels=indices, zero_division=0)),
        "roc_auc_ovr": roc_auc(labels, probabilities),
        "confusion_matrix": confusion_matrix(labels, predicted, labels=indices).tolist(),
        "class_names": list(class_names),
    }


def roc_auc(labels: np.ndarray, probabilities: np.ndarray) -> float | None:
    """Macro one-vs-rest ROC AUC over the classes present; None if fewer than two are."""
    present = np.unique(labels)
    if len(present) < 2:
        return None
    if probabilities.shape[1] == 2:
        return float(roc_auc_score(labels, probabilities[:, 1]))
    scores = [roc_auc_score(labels == c, probabilities[:, c]) for c in present]
    return float(np.mean(scores))


def plot_confusion_matrix(matrix: list[list[int]], class_names: list[str], path: Path) -> None:
    size = 2.5 + 0.9 * len(class_names)
    figure, axes = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(np.asarray(matrix), display_labels=class_names).plot(
        ax=axes, cmap="Blues", colorbar=False, xticks_rotation=30)
    axes.set_title("Test confusion matrix (counts)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
