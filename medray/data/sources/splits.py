"""Splits medray makes itself, stratified and seeded: for class folders without split folders
(`stratified_split`), and a validation split carved out of train (data.split.val_from_train)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from medray.data.sources.base import SPLITS, Source, count_labels


def stratified_split(by_class: dict[str, list[str]], split_config) -> dict[str, dict[str, list[str]]]:
    """Each class shuffled by data.split.seed and cut by the fractions: every split keeps the class mix."""
    splits: dict[str, dict[str, list[str]]] = {split: {} for split in SPLITS}
    for index, (class_name, files) in enumerate(sorted(by_class.items())):
        order = np.random.default_rng([split_config.seed, index]).permutation(len(files))
        shuffled = [files[i] for i in order]
        n_val, n_test = round(len(files) * split_config.val), round(len(files) * split_config.test)
        splits["val"][class_name] = sorted(shuffled[:n_val], key=folder_order)
        splits["test"][class_name] = sorted(shuffled[n_val:n_val + n_test], key=folder_order)
        splits["train"][class_name] = sorted(shuffled[n_val + n_test:], key=folder_order)
    return splits


def folder_order(location: str) -> list[str]:
    # Sorted folder by folder, as pathlib sorts: the split's seed must pick the same files as before.
    return location.split("/")


def carve_validation(source: Source, share: float, seed: int) -> Source:
    """`share` of every class's train rows become the validation split; the dataset's own validation
    rows are left out. Each class is drawn by its own generator ([seed, class]) so adding a class
    does not move the rows of the others; read tasks keep their files and row order."""
    train = source.pieces["train"]
    labels = np.asarray([label for piece in train for label in piece["labels"]], dtype=np.int64)
    chosen = np.zeros(len(labels), dtype=bool)
    for index in range(len(source.class_names)):
        members = np.flatnonzero(labels == index)
        take = round(len(members) * share) if len(members) > 1 else 0  # a lone row stays in train
        picked = np.random.default_rng([seed, index]).choice(members, size=take, replace=False)
        chosen[picked] = True
    pieces = {split: [] for split in SPLITS} | {"test": source.pieces["test"]}
    start = 0
    for piece in train:
        mask = chosen[start:start + len(piece["labels"])]
        start += len(piece["labels"])
        for split, keep in (("train", ~mask), ("val", mask)):
            if keep.any():
                subset = {key: [value for value, kept in zip(piece[key], keep) if kept]
                          for key in ("rows", "row_ids", "labels")}
                pieces[split].append(piece | subset | {"split": split})
    counts = {split: count_labels(pieces[split], len(source.class_names)) for split in SPLITS}
    rejected = [row for row in source.rejected if row["split"] != "val"]
    return replace(source, pieces=pieces, class_counts=counts, rejected=rejected)
