"""Write the 3-D demo dataset (head-volume phantoms, medray.data.phantoms3d) in MedMNIST-3D's layout:

  npz/volumes.npz   {split}_images (N, D, H, W) uint8, {split}_labels (N, 1) uint8 class indices,
                    {split}_masks (N, D, H, W) uint8 lesion masks (255 = lesion, all 0 without one)
  nifti/{split}/{class}/{split}_00012.nii.gz   the same volumes as NIfTI (RAS+, 1 mm voxels), in class
                    folders (data.source: nifti)
  nifti_masks/{split}/{class}/{split}_00012.nii.gz   the lesion masks of volumes with a lesion, as NIfTI
  volumes.csv       image, label, split, mask: every NIfTI volume listed with its mask file (blank
                    without a lesion), for data.source: csv with data.split_column: split
  dataset.json      the summary and parameters, written last

Written into a hidden sibling folder renamed into place at the end, as the 2-D demo is (synth.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medray.data.phantoms3d import CLASS_NAMES, MAX_VOLUME_SIZE, MIN_VOLUME_SIZE, make_volume_phantoms
from medray.data.synth import SPLITS, _write_in_place, split_seed
from medray.errors import MedrayError

VOLUMES_FILE = "npz/volumes.npz"
LISTING_FILE = "volumes.csv"


def write_volume_dataset(out_dir, *, train: int, val: int, test: int, size: int, seed: int) -> dict:
    """Generate volume phantoms for each split and write them; returns the summary (also in
    dataset.json): path, classes, counts per split and class, and the .npz file's path."""
    out_dir = Path(out_dir)
    if not MIN_VOLUME_SIZE <= size <= MAX_VOLUME_SIZE:
        raise MedrayError(f"--size={size}: volume phantoms are drawn at {MIN_VOLUME_SIZE} to {MAX_VOLUME_SIZE} "
                          "voxels a side")
    split_sizes = {"train": train, "val": val, "test": test}
    parameters = {**split_sizes, "size": size, "seed": seed, "volumes": True}

    def write_splits(staging: Path) -> dict:
        arrays, counts, listing = {}, {}, []
        for split in SPLITS:
            images, masks, labels = make_volume_phantoms(split_sizes[split], size, split_seed(seed, split))
            arrays |= {f"{split}_images": images, f"{split}_labels": labels.astype(np.uint8)[:, np.newaxis],
                       f"{split}_masks": np.where(masks, 255, 0).astype(np.uint8)}
            counts[split] = {name: int(np.sum(labels == index)) for index, name in enumerate(CLASS_NAMES)}
            listing += write_nifti_split(staging, split, images, labels, masks)
        (staging / VOLUMES_FILE).parent.mkdir(parents=True)
        np.savez_compressed(staging / VOLUMES_FILE, **arrays)
        pd.DataFrame(listing, columns=["image", "label", "split", "mask"]).to_csv(staging / LISTING_FILE, index=False)
        return {"path": str(out_dir), "classes": list(CLASS_NAMES), "counts": counts,
                "npz": str(out_dir / VOLUMES_FILE)}

    return _write_in_place(out_dir, split_sizes, size, seed, parameters, write_splits, min_size=MIN_VOLUME_SIZE)


def write_nifti_split(root: Path, split: str, images: np.ndarray, labels: np.ndarray,
                      masks: np.ndarray) -> list[tuple[str, str, str, str]]:
    """One .nii.gz per volume in root/nifti/<split>/<class>/, and its mask (volumes with a lesion) in
    root/nifti_masks/ at the same relative path: medray's (D, H, W) = (S, A, R) stored as NIfTI's
    (R, A, S) with an identity affine (RAS+, 1 mm), so reading it back gives the same voxels.
    Returns the listing's rows (image, label, split, mask), paths relative to root."""
    import nibabel

    rows = []
    for index, (volume, label, mask) in enumerate(zip(images, labels, masks)):
        relative = Path(split) / CLASS_NAMES[int(label)] / f"{split}_{index:05d}.nii.gz"
        mask_file = ""
        for folder, voxels in (("nifti", volume), ("nifti_masks", np.where(mask, 1, 0).astype(np.uint8))):
            if folder == "nifti_masks" and not mask.any():
                continue
            path = root / folder / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            nibabel.save(nibabel.Nifti1Image(np.ascontiguousarray(voxels.transpose(2, 1, 0)), np.eye(4)), path)
            mask_file = (Path(folder) / relative).as_posix() if folder == "nifti_masks" else mask_file
        rows.append(((Path("nifti") / relative).as_posix(), CLASS_NAMES[int(label)], split, mask_file))
    return rows
