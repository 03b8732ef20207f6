"""A file a source lists (in a class folder, a CSV row) as a row's content, its format decided by its
name in one place: a NIfTI file (.nii, .nii.gz) is read into a `Volume` (canonical orientation,
spacing kept, see medray.data.nifti); any other file (PNG, JPEG, DICOM) stays bytes for decode.py.
Sources never ask whether a row is a volume; they ask this module what a file holds.
"""

from __future__ import annotations

from dataclasses import replace

from medray import storage
from medray.data.nifti import is_nifti_name, read_nifti
from medray.data.sources.base import MISSING_FILE
from medray.data.volumes import Volume
from medray.errors import BadImage

# What each kind of listed file holds, for messages: by its spatial axes.
HOLDS = {2: "a 2-D image", 3: "a 3-D volume"}


def file_spatial_dims(file: str) -> int:
    """3 for a volume file (NIfTI), 2 for an image file."""
    return 3 if is_nifti_name(file) else 2


def read_listed_file(path: str, where: str, settings: dict, missing_hint: str = "") -> bytes | Volume | BadImage:
    """The content of the file at `path` (local or a URI): a NIfTI file as a `Volume` in the window
    settings["window"], within settings["max_pixels"] voxels; other files as their bytes.

    Never raises for bad content: a file that cannot be read or used comes back as the BadImage
    naming `where` (judged when the row is decoded, as every source's bad content is);
    `missing_hint` ends the sentence for a missing file ("; fix the path in the CSV").
    """
    try:
        content = storage.read_bytes(path)
    except OSError as error:
        reason = error.strerror or storage.first_line(error)
        what = "the file" if where == path else f"{'volume' if is_nifti_name(path) else 'image'} file {path}"
        return BadImage(f"{where}: cannot read {what} ({reason}){missing_hint}", MISSING_FILE)
    if not is_nifti_name(path):
        return content
    try:
        return replace(read_nifti(content, where, settings["max_pixels"]), window=settings.get("window"))
    except BadImage as error:
        return error
