"""Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks"), fitted on the
validation split and stored with the run in `calibration.json`.

A network trained with cross-entropy is often over-confident: its top-class probability is higher
than its accuracy. Temperature scaling divides the logits by one scalar T > 0 chosen to minimise
the negative log-likelihood (NLL) of the validation split; T > 1 softens over-confident
probabilities, T < 1 sharpens under-confident ones. It never changes which class is the most
probable, so accuracy, ROC AUC and the predictions stay exactly as they were.

The head decides the form (medray.task asks these functions):
- softmax (single-label): softmax(z / T) with one T shared by the K classes. The logits are
  recovered from the stored probabilities as log p, which differs from z by a per-row constant
  that softmax ignores;
- binary sigmoid: the same function on [1 - p, p], which equals sigmoid(logit(p) / T);
- multi-label sigmoid: sigmoid(logit(p_k) / T_k), one T per label, each fitted on the label's
  known validation entries (labels differ in prevalence and in how well they were learnt).

Probabilities are clipped to [1e-7, 1 - 1e-7] before the log (float32 rounds very confident
outputs to exactly 1), so a recovered logit is at most about ±16.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, special

CALIBRATION = "calibration.json"
PAPER = "Guo et al. 2017, On Calibration of Modern Neural Networks"
# T is searched in this range on a log scale; the bounds are never reached by a model that learnt anything.
TEMPERATURE_BOUNDS = (0.05, 20.0)
EPSILON = 1e-7


def softmax_logits(probabilities: np.ndarray) -> np.ndarray:
    """(N, K) log-probabilities: the logits up to a per-row constant."""
    return np.log(np.clip(np.asarray(probabilities, np.float64), EPSILON, 1.0))


def sigmoid_logits(probabilities: np.ndarray) -> np.ndarray:
    """(N, K) log-odds of each sigmoid output."""
    return special.logit(np.clip(np.asarray(probabilities, np.float64), EPSILON, 1 - EPSILON))


def scale_softmax(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """(N, K) softmax(log p / T)."""
    return special.softmax(softmax_logits(probabilities) / temperature, axis=1)


def scale_sigmoid(probabilities: np.ndarray, temperatures: np.ndarray) -> np.ndarray:
    """(N, K) sigmoid(logit(p_k) / T_k), `temperatures` (K,)."""
    return special.expit(sigmoid_logits(probabilities) / np.asarray(temperatures, np.float64))


def _minimise(nll) -> float:
    low, high = np.log(TEMPERATURE_BOUNDS)
    return float(np.exp(optimize.minimize_scalar(lambda log_t: nll(np.exp(log_t)), bounds=(low, high),
                                                 method="bounded", options={"xatol": 1e-4}).x))


def fit_softmax_temperature(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """The T minimising the mean NLL of softmax(log p / T) on (N,) class indices; rows with
    label -1 (unlabelled) are left out. Raises ValueError without a labelled row."""
    labels = np.asarray(labels, np.int64)
    known = labels >= 0
    if not known.any():
        raise ValueError("no labelled row to fit a temperature on")
    logits, labels = softmax_logits(probabilities)[known], labels[known]
    rows = np.arange(len(labels))
    return _minimise(lambda t: -special.log_softmax(logits / t, axis=1)[rows, labels].mean())


def fit_sigmoid_temperature(truth: np.ndarray, probabilities: np.ndarray) -> float:
    """The T minimising the mean binary NLL of sigmoid(logit(p) / T) on (N,) 0/1 truth, (N,) p."""
    logits = sigmoid_logits(probabilities)
    truth = np.asarray(truth, np.float64)
    # -log sigmoid(z) = log(1 + e^-z), written with logaddexp so that it does not overflow
    return _minimise(lambda t: np.mean(truth * np.logaddexp(0, -logits / t)
                                       + (1 - truth) * np.logaddexp(0, logits / t)))


def calibration_record(temperatures: list[float], shared_by: str, names: list[str], images: int) -> dict:
    """calibration.json: {"method", "paper", "fitted_on": "val", "images", "shared_by" ("classes":
    one T for the head, or "label": one per label), "names", "temperatures"}."""
    return {"method": "temperature scaling", "paper": PAPER, "fitted_on": "val", "images": int(images),
            "shared_by": shared_by, "names": list(names), "temperatures": [float(t) for t in temperatures]}


def with_calibrated_probabilities(predictions, task, record: dict | None):
    """The predictions table with a `calibrated_probabilities` column (the task's temperature scaling
    of `probabilities`); unchanged when the run has no calibration (`record` None). The raw
    `probabilities`, `prediction` and `confidence` stay as the model gave them."""
    if record is None:
        return predictions
    probabilities = np.stack(predictions["probabilities"].to_numpy()).astype(np.float64)
    calibrated = task.apply_temperature(probabilities, np.asarray(record["temperatures"]))
    return predictions.assign(calibrated_probabilities=list(calibrated.astype(np.float32)))
