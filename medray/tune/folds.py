"""K-fold cross-validation over the train and validation splits together (the sweep key
`cross_validation.folds`), for datasets whose validation split is too small to rank trials on
(PneumoniaMNIST's has 524 images: one image moves its accuracy by 0.2 points).

The folds: the usable rows of train + validation (one decode pass over those two splits and never
over the test split, kept as `<sweep>/folds.parquet`) are cut into K folds by scikit-learn's
`StratifiedGroupKFold`, shuffled by the sweep's seed: every fold keeps the class mix, and rows with
the same decoded pixels (the manifest's `content_hash`, what `medray data inspect --dedupe` groups
by) share one fold, so that no image is trained on in a fold's training part and scored in its
held-out part. Rows that a `data.manifest` marks duplicate or leak, or that do not decode, are left
out as in a run. Fold k's `Source` trains on the other K - 1 folds and validates on fold k; its test
split is empty, so no trial can read the test split.

How the folds map onto Ray Tune: one trial trains its K folds one after the other (each a Ray Train
run whose early stopping and exported epoch use its held-out fold) and reports to Tune after each
fold the mean over the folds done so far, with `fold` as ASHA's time attribute. Every trial trains
the same folds in the same order, so at ASHA's rung r every trial's value is a mean over the same
first r folds: a fold-1 score is never compared with another trial's K-fold mean. Only trials that
trained all K folds can win.

Refused, in one line: multi-label data (scikit-learn has no iterative stratification, Sechidis et
al. 2011, "On the stratification of multi-label data") and a CSV listing split by patient
(data.patient_column), whose read tasks no longer carry the patient, so folds could not keep a
patient's images together.

Reference: Kohavi 1995, "A study of cross-validation and bootstrap for accuracy estimation and
model selection" (stratified K-fold).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from medray.data.manifest import OK, enforce_policy, read_manifest, scan_rows, usable_pieces
from medray.data.sources import SPLITS, Source, count_labels
from medray.errors import MedrayError

FOLDS_FILE = "folds.parquet"
KEY = "cross_validation.folds"


def check_folds_fit(folds: int, source: Source, data_config) -> None:
    """Before Ray starts: K-fold needs one class per image, no patient groups, and at least
    `folds` train+validation images of every class. Raises MedrayError naming the key."""
    if source.multi_label:
        raise MedrayError(f"{KEY}={folds}: {source.path} is multi-label, and folds are stratified by class "
                          "(scikit-learn has no multi-label stratification); remove cross_validation")
    if data_config.patient_column:
        raise MedrayError(f"{KEY}={folds}: data.patient_column is set, and folds cannot keep a patient's images "
                          "together; remove cross_validation or data.patient_column")
    empty = [0] * len(source.class_names)
    counts = np.add(source.class_counts.get("train", empty), source.class_counts.get("val", empty))
    smallest = int(np.argmin(counts))
    if counts[smallest] < folds:
        raise MedrayError(f"{KEY}={folds} is more than the {counts[smallest]} train+validation images of class "
                          f"{source.class_names[smallest]!r}, and every fold needs each class; "
                          f"set {KEY} to at most {counts[smallest]}")


def without_test(source: Source) -> Source:
    """The source with an empty test split: what the search may read."""
    return replace(source, pieces={**source.pieces, "test": []},
                   class_counts={**source.class_counts, "test": [0] * len(source.class_names)},
                   rejected=[row for row in source.rejected if row["split"] != "test"])


def fold_manifest(source: Source, data_config, folds: int, seed: int) -> pd.DataFrame:
    """The usable train+validation rows (the manifest's columns: row_id, split, label, content_hash,
    file, part, offset, row, order, ...) with `fold` in 0..folds-1. Decodes those two splits once
    in Ray Data workers (Ray must be connected), or reads data.manifest when it is set."""
    if data_config.manifest is not None:
        frame = read_manifest(data_config.manifest, data_config)
        frame = frame[frame["split"] != "test"]
    else:
        frame = scan_rows(without_test(source), data_config)
    enforce_policy(frame, data_config.on_bad_image, counted_in=FOLDS_FILE)
    usable = frame[frame["status"] == OK].reset_index(drop=True)
    groups = usable["content_hash"].where(usable["content_hash"] != "", usable["row_id"])
    return usable.assign(fold=assign_folds(usable["label"].to_numpy(), groups.to_numpy(), folds, seed,
                                           source.class_names))


def assign_folds(labels: np.ndarray, groups: np.ndarray, folds: int, seed: int, class_names: list[str]) -> np.ndarray:
    """(N,) the fold (0..folds-1) that holds out each row: stratified by `labels` (N,) class indices,
    each group of `groups` (N,) in one fold, the same for the same seed."""
    labels = np.asarray(labels, dtype=np.int64)
    for index, name in enumerate(class_names):
        distinct = len(set(groups[labels == index]))
        if distinct < folds:
            raise MedrayError(f"{KEY}={folds} is more than the {distinct} distinct usable train+validation images "
                              f"of class {name!r}, and every fold needs each class; set {KEY} to at most {distinct}")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    fold = np.full(len(labels), -1, dtype=np.int64)
    for k, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
        fold[held_out] = k
    return fold


def fold_sources(source: Source, frame: pd.DataFrame) -> list[Source]:
    """One source per fold k: train = the rows of the other folds, val = fold k's rows, test empty."""
    sources = []
    for k in range(int(frame["fold"].max()) + 1):
        pieces = usable_pieces(frame.assign(split=np.where(frame["fold"] == k, "val", "train")), source)
        counts = {split: count_labels(pieces[split], len(source.class_names)) for split in SPLITS}
        sources.append(replace(source, pieces=pieces, class_counts=counts, rejected=[], discarded_val_rows=0))
    return sources


def prepare_folds(sweep_dir: Path, source: Source, data_config, folds: int, seed: int) -> list[Source]:
    """The fold sources of a sweep: `<sweep_dir>/folds.parquet` when a resumed sweep has one, else
    drawn now and written there."""
    path = Path(sweep_dir) / FOLDS_FILE
    if path.is_file():
        frame = pd.read_parquet(path)
    else:
        frame = fold_manifest(source, data_config, folds, seed)
        frame.to_parquet(path, index=False)
    return fold_sources(source, frame)


def fold_summary(values: list[dict], metrics: list[str]) -> dict:
    """The mean of each metric over the folds done, and its standard deviation (`<metric>_sd`, over
    folds, ddof=0 as scikit-learn's cv_results_ std_test_score)."""
    summary = {}
    for name in metrics:
        done = [value[name] for value in values if value.get(name) is not None]
        if done:
            summary[name] = float(np.mean(done))
            summary[f"{name}_sd"] = float(np.std(done))
    return summary
