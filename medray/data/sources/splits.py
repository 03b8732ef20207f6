"""Splits medray makes itself, seeded: stratified for class folders without split folders
(`stratified_split`), by patient for a CSV listing without a split column (`group_split`), and a
validation split carved out of train (data.split.val_from_train)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from medray.data.sources.base import SPLITS, Source, count_labels, label_array


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


def group_split(groups: list[str], split_config) -> list[str]:
    """The split of each row when rows come in groups that must stay together (the images of one
    patient): the distinct groups are shuffled by data.split.seed and cut by the fractions, so no
    group is in two splits. The fractions count groups, not rows; labels are not stratified (a
    rare label may miss the validation or test split of a small dataset)."""
    distinct = sorted(set(groups))
    order = np.random.default_rng(split_config.seed).permutation(len(distinct))
    n_val, n_test = round(len(distinct) * split_config.val), round(len(distinct) * split_config.test)
    split_of_group = {}
    for rank, index in enumerate(order):
        split_of_group[distinct[index]] = "val" if rank < n_val else "test" if rank < n_val + n_test else "train"
    return [split_of_group[group] for group in groups]


def carve_validation(source: Source, share: float, seed: int) -> Source:
    """`share` of every class's train rows become the validation split; the dataset's own validation
    rows are left out, and counted in `discarded_val_rows` for the data report. Each class is drawn
    by its own generator ([seed, class]) so adding a class does not move the rows of the others;
    read tasks keep their files and row order.

    Multi-label rows belong to several labels or none, so they are not stratified: a seeded random
    `share` of all train rows is drawn (iterative stratification, Sechidis et al. 2011, would keep
    rare labels' shares closer, at a cost this split does not need)."""
    train = source.pieces["train"]
    labels = label_array(label for piece in train for label in piece["labels"])
    chosen = np.zeros(len(labels), dtype=bool)
    if labels.ndim == 2:
        picked = np.random.default_rng(seed).choice(len(labels), size=round(len(labels) * share), replace=False)
        chosen[picked] = True
    for index in range(len(source.class_names) if labels.ndim == 1 else 0):
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
    discarded = source.num_rows("val") + len(source.rejected) - len(rejected)
    return replace(source, pieces=pieces, class_counts=counts, rejected=rejected, discarded_val_rows=discarded)
