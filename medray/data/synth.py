"""Write the built-in demo dataset (brain-MRI phantoms) in both layouts medray reads.

One generation, two views of the same PNG bytes:
  parquet/{split}-00000-of-00001.parquet   Hugging Face style: image, mask, label
  folders/{split}/{class}/{split}_00012.png  class folders, as Keras and most tools read them
  masks/{split}/{class}/{split}_00012.png    ground-truth lesion masks (0/255), same names
  dataset.json                              the summary and parameters, written last
The multi-label demo (`write_multilabel_dataset`) writes, from one generation:
  parquet/{split}-00000-of-00001.parquet   image, labels (list of finding names), one mask per finding
  npz/multilabel.npz                        MedMNIST multi-label layout (as ChestMNIST): {split}_images
                                            (N, H, W) uint8, {split}_labels (N, K) uint8 0/1
  dataset.json                              the summary and parameters, written last
Everything is written into a hidden sibling directory that is renamed into place at the end, so a
crashed run never leaves a directory that looks like a dataset.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from medray.data.phantoms import (
    CLASS_NAMES,
    COMBINATIONS,
    LABEL_NAMES,
    MIN_SIZE,
    make_multilabel_phantoms,
    make_phantoms,
)
from medray.errors import MedrayError

SPLITS = ("train", "val", "test")
ROW_GROUP_ROWS = 256
IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def write_demo_dataset(out_dir, *, train: int, val: int, test: int, size: int, seed: int,
                       second_scanner: str | None = None) -> dict:
    """Generate phantoms for each split and write them; returns the summary also in dataset.json.
    `second_scanner`: a class name whose slices all come from a second scanner (phantoms.py)."""
    out_dir = Path(out_dir)
    split_sizes = {"train": train, "val": val, "test": test}
    parameters = {**split_sizes, "size": size, "seed": seed, **({"second_scanner": second_scanner}
                                                                 if second_scanner else {})}
    if second_scanner is not None and second_scanner not in CLASS_NAMES:
        raise MedrayError(f"--second-scanner {second_scanner}: not a phantom class; choose one of "
                          f"{', '.join(CLASS_NAMES)}")
    planted = CLASS_NAMES.index(second_scanner) if second_scanner else None

    def write_splits(staging: Path) -> dict:
        counts = {}
        for split, rows in split_sizes.items():
            images, masks, labels = make_phantoms(rows, size, split_seed(seed, split), second_scanner=planted)
            _write_split(staging, split, images, masks, labels)
            counts[split] = {name: int(np.sum(labels == index)) for index, name in enumerate(CLASS_NAMES)}
        return {"path": str(out_dir), "classes": list(CLASS_NAMES), "counts": counts}

    return _write_in_place(out_dir, split_sizes, size, seed, parameters, write_splits)


def write_multilabel_dataset(out_dir, *, train: int, val: int, test: int, size: int, seed: int) -> dict:
    """Generate multi-label phantoms (phantoms.make_multilabel_phantoms) for each split and write
    them as parquet and as a MedMNIST-style .npz; returns the summary also in dataset.json:
    {"path", "task": "multi_label", "labels": K names, "counts": {split: {label: images with it}},
    "combinations": {split: {"no_finding" | "name|name...": images with exactly those findings}}}."""
    out_dir = Path(out_dir)
    split_sizes = {"train": train, "val": val, "test": test}
    # The task is a parameter, so a single-label dataset is never reused for a multi-label request.
    parameters = {"task": "multi_label", **split_sizes, "size": size, "seed": seed}

    def write_splits(staging: Path) -> dict:
        counts, combinations, arrays = {}, {}, {}
        for split, rows in split_sizes.items():
            images, masks, labels = make_multilabel_phantoms(rows, size, split_seed(seed, split))
            _write_multilabel_split(staging, split, images, masks, labels)
            arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
            counts[split] = {name: int(labels[:, k].sum()) for k, name in enumerate(LABEL_NAMES)}
            combinations[split] = {combination_name(combination): int(np.all(labels == combination, axis=1).sum())
                                   for combination in COMBINATIONS}
        (staging / "npz").mkdir()
        np.savez_compressed(staging / "npz" / "multilabel.npz", **arrays)
        return {"path": str(out_dir), "task": "multi_label", "labels": list(LABEL_NAMES), "counts": counts,
                "combinations": combinations}

    return _write_in_place(out_dir, split_sizes, size, seed, parameters, write_splits)


def combination_name(present) -> str:
    """A 0/1 vector over LABEL_NAMES as dataset.json names it: the present names joined by "|"
    (as predictions.parquet's prediction_name), or "no_finding"."""
    names = [name for name, bit in zip(LABEL_NAMES, present) if bit]
    return "|".join(names) if names else "no_finding"


def _write_in_place(out_dir: Path, split_sizes: dict[str, int], size: int, seed: int, parameters: dict,
                    write_splits: Callable[[Path], dict], min_size: int = MIN_SIZE) -> dict:
    """Run write_splits(staging folder) -> summary, add dataset.json and rename the staging folder
    to out_dir; or return the summary of out_dir when it already holds this very dataset."""
    existing = _same_dataset(out_dir, parameters)
    if existing is not None:
        return existing
    _check_arguments(out_dir, split_sizes, size, seed, min_size)
    staging = out_dir.parent / f".{out_dir.name}.incomplete-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)  # left by an earlier crash of a process with our id
    staging.mkdir(parents=True)
    try:
        summary = write_splits(staging)
        record = {**summary, "parameters": parameters}
        (staging / "dataset.json").write_text(json.dumps(record, indent=2) + "\n")
        # Replaces an empty out_dir too; a non-empty one was refused above.
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summary


def _same_dataset(out_dir: Path, parameters: dict) -> dict | None:
    """The summary of a finished dataset made with these very parameters, so that re-running
    the README's demo command reuses it instead of failing on a non-empty folder."""
    record_path = out_dir / "dataset.json"
    if not record_path.is_file():
        return None
    record = json.loads(record_path.read_text())
    if record.get("parameters") != parameters:
        return None
    return {key: value for key, value in record.items() if key != "parameters"}


def split_seed(seed: int, split: str) -> int:
    """An independent, stable seed per split (Python's hash() of a string changes every run)."""
    sequence = np.random.SeedSequence([seed, *split.encode("utf-8")])
    return int(sequence.generate_state(1, dtype=np.uint64)[0])


def encode_png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def huggingface_schema() -> pa.Schema:
    """The parquet schema, with class names where Hugging Face `datasets` keeps its features."""
    features = {
        "image": {"_type": "Image"},
        "mask": {"_type": "Image"},
        "label": {"names": list(CLASS_NAMES), "_type": "ClassLabel"},
    }
    metadata = {b"huggingface": json.dumps({"info": {"features": features}}).encode("utf-8")}
    columns = [("image", IMAGE_STRUCT), ("mask", IMAGE_STRUCT), ("label", pa.int64())]
    return pa.schema(columns, metadata=metadata)


def mask_column(label_name: str) -> str:
    """The parquet column holding label_name's lesion masks in the multi-label demo."""
    return f"mask_{label_name}"


def huggingface_multilabel_schema() -> pa.Schema:
    """The multi-label parquet schema: `labels` is a list of finding names, declared as Hugging Face
    Sequence(ClassLabel) so the names (and their order) travel with the file."""
    features = {
        "image": {"_type": "Image"},
        "labels": {"feature": {"names": list(LABEL_NAMES), "_type": "ClassLabel"}, "_type": "Sequence"},
        **{mask_column(name): {"_type": "Image"} for name in LABEL_NAMES},
    }
    metadata = {b"huggingface": json.dumps({"info": {"features": features}}).encode("utf-8")}
    columns = [("image", IMAGE_STRUCT), ("labels", pa.list_(pa.string())),
               *((mask_column(name), IMAGE_STRUCT) for name in LABEL_NAMES)]
    return pa.schema(columns, metadata=metadata)


def _write_split(root: Path, split: str, images: np.ndarray, masks: np.ndarray, labels: np.ndarray) -> None:
    for name in CLASS_NAMES:  # every class folder exists, even an empty one, so indices stay put
        (root / "folders" / split / name).mkdir(parents=True)
        (root / "masks" / split / name).mkdir(parents=True)
    image_cells, mask_cells = [], []
    for index, (image, mask, label) in enumerate(zip(images, masks, labels)):
        file_name = f"{split}_{index:05d}.png"
        image_png, mask_png = encode_png(image), encode_png(mask.astype(np.uint8) * 255)
        class_name = CLASS_NAMES[label]
        (root / "folders" / split / class_name / file_name).write_bytes(image_png)
        (root / "masks" / split / class_name / file_name).write_bytes(mask_png)
        image_cells.append({"bytes": image_png, "path": file_name})
        mask_cells.append({"bytes": mask_png, "path": file_name})
    table = pa.table({"image": image_cells, "mask": mask_cells, "label": labels}, schema=huggingface_schema())
    (root / "parquet").mkdir(exist_ok=True)
    pq.write_table(table, root / "parquet" / f"{split}-00000-of-00001.parquet", row_group_size=ROW_GROUP_ROWS)


def _write_multilabel_split(root: Path, split: str, images: np.ndarray, masks: np.ndarray,
                            labels: np.ndarray) -> None:
    """images (N, H, W) uint8, masks (N, K, H, W) bool, labels (N, K) 0/1 -> one parquet file."""
    columns = {"image": [], "labels": [], **{mask_column(name): [] for name in LABEL_NAMES}}
    for index, (image, image_masks, present) in enumerate(zip(images, masks, labels)):
        file_name = f"{split}_{index:05d}.png"
        columns["image"].append({"bytes": encode_png(image), "path": file_name})
        columns["labels"].append([name for name, bit in zip(LABEL_NAMES, present) if bit])
        for name, mask in zip(LABEL_NAMES, image_masks):
            columns[mask_column(name)].append({"bytes": encode_png(mask.astype(np.uint8) * 255), "path": file_name})
    table = pa.table(columns, schema=huggingface_multilabel_schema())
    (root / "parquet").mkdir(exist_ok=True)
    pq.write_table(table, root / "parquet" / f"{split}-00000-of-00001.parquet", row_group_size=ROW_GROUP_ROWS)


def _check_arguments(out_dir: Path, split_sizes: dict[str, int], size: int, seed: int,
                     min_size: int = MIN_SIZE) -> None:
    for split, rows in split_sizes.items():
        if rows < 0:
            raise MedrayError(f"{split}={rows}: the number of {split} images cannot be negative")
    if seed < 0:
        raise MedrayError(f"seed={seed}: use a non-negative integer seed")
    if size < min_size:
        raise MedrayError(f"size={size}: phantoms need at least {min_size} pixels a side")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise MedrayError(
            f"{out_dir} already exists and is not empty; delete it or choose another output directory"
        )
