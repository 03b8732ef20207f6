"""NIfTI volumes (.nii, .nii.gz) in class folders: `<path>/<split>/<class>/*.nii.gz` with the splits
as given, or `<path>/<class>/*.nii.gz`, split by medray (stratified, seeded). One read task per file.

Each file is read by medray.data.nifti (canonical RAS+ orientation, spacing kept, gzip bombs
refused); a CSV can list NIfTI files too (data.source: csv), read the same way.
"""

from __future__ import annotations

from pathlib import Path

from medray.data.nifti import HEADER_ALLOWANCE, NIFTI_SUFFIXES, is_nifti_name, read_nifti
from medray.data.sources.folders import FolderSource
from medray.data.sources.registry import register

__all__ = ["HEADER_ALLOWANCE", "NIFTI_SUFFIXES", "NiftiSource", "is_nifti_name", "read_nifti"]


class NiftiSource(FolderSource):
    name = "nifti"
    layout = "<path>/<split>/<class>/*.nii.gz or <path>/<class>/*.nii.gz"
    suffixes = ()
    pieces_per_read_task = 8
    spatial_dims = 3

    def accepts(self, file: str) -> bool:
        return is_nifti_name(file)

    def holds(self, folder: Path) -> bool:
        return any(is_nifti_name(str(file)) for file in folder.rglob("*"))


register(NiftiSource())
