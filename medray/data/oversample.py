"""Class balance by repetition: every class gets exactly the same number of training rows per epoch.

Class c with n_c rows and a target of T rows: every row is repeated floor(T / n_c) times, and a
subset of T mod n_c rows, chosen by the run's seed, once more. The epoch's length is then known
exactly (T per class) before any image is read, so every worker runs the same number of steps.
When T < n_c this keeps a seeded subset of T rows of that class (undersampling, floor(T / n_c) = 0).

The subset is fixed for a run; the copies still differ, because the augmentation seed column is
drawn after the repetition, per copy and per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medray.errors import MedrayError


@dataclass(frozen=True)
class OversamplePlan:
    # class index -> copies every row of that class gets
    base_copies: dict[int, int]
    # rows (by row_id) that get one copy more than their class's base
    extra_rows: frozenset[str]
    # class index -> rows of that class per epoch
    rows_per_class: dict[int, int]
    seed: int

    @property
    def total_rows(self) -> int:
        return sum(self.rows_per_class.values())


def plan_oversampling(row_ids: np.ndarray, labels: np.ndarray, target: int | str, seed: int) -> OversamplePlan:
    """target: rows per class and epoch, or "max" for the largest class's count."""
    row_ids, labels = np.asarray(row_ids).astype(str), np.asarray(labels, dtype=np.int64)
    if labels.ndim > 1:
        raise MedrayError("train.class_balance=oversample: the rows carry several labels each (multi-label), "
                          "and oversampling repeats the rows of one class; use train.class_balance: weights")
    if len(set(row_ids.tolist())) != len(row_ids):
        raise MedrayError("oversampling needs unique row ids in the train split; found duplicates")
    classes, counts = np.unique(labels, return_counts=True)
    per_class = max(counts) if target == "max" else int(target)
    rng = np.random.default_rng(seed)
    base, extra = {}, []
    for label, count in zip(classes.tolist(), counts.tolist()):
        # Sorted, so the choice depends on the seed and the rows, not on the order Ray Data read them in.
        members = np.sort(row_ids[labels == label])
        base[label] = per_class // count
        extra.extend(rng.choice(members, size=per_class % count, replace=False).tolist())
    return OversamplePlan(base, frozenset(extra), {label: int(per_class) for label in classes.tolist()}, seed)


def repeat_rows(batch: dict, plan: OversamplePlan) -> dict:
    """Repeat each row as the plan says, then shuffle the batch so that copies do not sit side by side
    (neighbouring rows end up in the same training step)."""
    labels = batch["label"]
    copies = np.array([plan.base_copies.get(int(label), 0) + (row_id in plan.extra_rows)
                       for row_id, label in zip(batch["row_id"], labels)], dtype=np.int64)
    repeated = {name: np.repeat(np.asarray(column), copies, axis=0) for name, column in batch.items()}
    first_row = str(batch["row_id"][0]) if len(labels) else ""
    order = np.random.default_rng([plan.seed, *first_row.encode()]).permutation(int(copies.sum()))
    return {name: column[order] for name, column in repeated.items()}
