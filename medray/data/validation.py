"""The validation split a model is picked by: warned about when a class has too few images in it,
and, on request (data.split.val_from_train), carved out of train instead, stratified and seeded."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from medray.data.sources import SPLITS, Source, count_labels


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


def small_validation_warnings(source: Source, minimum: int) -> list[str]:
    """One sentence per class with fewer than `minimum` validation images."""
    return [f"validation split: class {name} has {count} image{'s' if count != 1 else ''} (fewer than "
            f"data.min_val_per_class={minimum}), so the validation metrics that pick the model are noisy "
            f"for it; add images or set data.split.val_from_train (e.g. 0.1) to carve a stratified "
            f"validation split out of train"
            for name, count in zip(source.class_names, source.class_counts["val"]) if count < minimum]
