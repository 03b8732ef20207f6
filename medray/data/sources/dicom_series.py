"""DICOM series, one study folder per volume: `<path>/<split>/<class>/<study>/*` with the splits as
given, or `<path>/<class>/<study>/*`, split by medray (stratified, seeded). One read task per study.

Slices are ordered by their position along the slice normal (ImagePositionPatient projected on the
cross product of ImageOrientationPatient's row and column directions), never by file name, and
the modality rescale (slope, intercept: Hounsfield units for CT) is applied. A study that cannot be
stacked safely - slices of several series, of other sizes or orientations, a missing slice (a gap
well above the usual spacing) or uneven spacing - is a bad row naming the study, never stacked.
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np

from medray import storage
from medray.data.sources.base import MISSING_FILE, RawRow, row_label
from medray.data.sources.folders import FolderSource
from medray.data.sources.registry import register
from medray.data.volumes import Volume
from medray.errors import BadImage

# Slices closer than this share of the usual spacing to a neighbour's expected position are in
# place; a gap of 1.5 spacings or more means a slice is missing.
SPACING_TOLERANCE = 0.1
MISSING_GAP = 1.5
BAD_SERIES = "bad series"


def read_series(files: dict[str, bytes], where: str, max_voxels: int) -> Volume:
    """The slices (file name -> bytes) of one study as a (D, H, W) float32 volume in patient order,
    rescaled; spacing (slice distance, row and column spacing in mm). Raises BadImage naming `where`."""
    import pydicom
    from pydicom.pixels import apply_modality_lut

    slices = []
    for name, data in sorted(files.items()):
        try:
            dataset = pydicom.dcmread(io.BytesIO(data))
            position = np.asarray(dataset.ImagePositionPatient, np.float64)
            orientation = np.asarray(dataset.ImageOrientationPatient, np.float64)
            shape = (int(dataset.Rows), int(dataset.Columns))
        except Exception as error:  # noqa: BLE001  (pydicom raises many types on a broken file)
            raise BadImage(f"{where}/{name}: not a slice of a series ({type(error).__name__}: {error}); DICOM "
                           "series need ImagePositionPatient and ImageOrientationPatient", BAD_SERIES) from None
        slices.append((name, dataset, position, orientation, shape, str(dataset.get("SeriesInstanceUID", ""))))
    if len(slices) < 2:
        raise BadImage(f"{where}: {len(slices)} DICOM slice; a series needs two or more", BAD_SERIES)
    for what, index in (("series (SeriesInstanceUID)", 5), ("sizes (Rows x Columns)", 4)):
        values = {str(item[index]) for item in slices}
        if len(values) > 1:
            raise BadImage(f"{where}: slices of {len(values)} different {what}; keep one series per study folder",
                           BAD_SERIES)
    orientation = slices[0][3]
    if any(not np.allclose(item[3], orientation, atol=1e-4) for item in slices):
        raise BadImage(f"{where}: slices of different orientations (ImageOrientationPatient); keep one series "
                       "per study folder", BAD_SERIES)
    rows, columns = slices[0][4]
    if len(slices) * rows * columns > max_voxels:
        raise BadImage(f"{where}: {len(slices)} slices of {rows}x{columns} are over data.max_image_pixels="
                       f"{max_voxels} voxels; raise the limit only for files you trust", "over pixel limit")
    normal = np.cross(orientation[:3], orientation[3:])
    distances = np.asarray([float(item[2] @ normal) for item in slices])
    order = np.argsort(distances, kind="stable")
    slices, distances = [slices[i] for i in order], distances[order]
    steps = np.diff(distances)
    spacing = float(np.median(steps))
    if spacing <= 0:
        raise BadImage(f"{where}: two slices share one position ({slices[int(np.argmin(steps))][0]}); remove the "
                       "duplicate", BAD_SERIES)
    gap = int(np.argmax(steps))
    if steps[gap] >= MISSING_GAP * spacing:
        missing = int(round(steps[gap] / spacing)) - 1
        raise BadImage(f"{where}: {missing} slice{'s' * (missing != 1)} missing between {slices[gap][0]} and "
                       f"{slices[gap + 1][0]} ({steps[gap]:g} mm apart, the series' spacing is {spacing:g} mm); "
                       "add the missing slices or remove the study", BAD_SERIES)
    if np.any(np.abs(steps - spacing) > SPACING_TOLERANCE * spacing):
        raise BadImage(f"{where}: slice spacing varies from {steps.min():g} to {steps.max():g} mm; medray stacks "
                       "evenly spaced series only: resample it first", BAD_SERIES)
    try:
        planes = [np.asarray(apply_modality_lut(item[1].pixel_array, item[1]), np.float32) for item in slices]
    except Exception as error:  # noqa: BLE001  (each pixel-data decoder raises its own types)
        raise BadImage(f"{where}: cannot decode the pixel data ({type(error).__name__}: {error})", BAD_SERIES) from None
    pixel_spacing = [float(value) for value in slices[0][1].get("PixelSpacing", [1.0, 1.0])]
    return Volume(np.stack(planes), (spacing, *pixel_spacing))


class DicomSeriesSource(FolderSource):
    name = "dicom_series"
    layout = "<path>/<split>/<class>/<study>/*.dcm or <path>/<class>/<study>/*.dcm"
    suffixes = ()
    pieces_per_read_task = 4
    spatial_dims = 3

    def class_rows(self, folder: str, ignored: list[str]) -> dict[str, list[str]]:
        """class -> its study folders; files lying directly in a class folder are ignored."""
        by_class = {}
        for child, is_dir in storage.list_files(folder, "data.path", recursive=False):
            if not is_dir:
                ignored.append(child)
                continue
            entries = storage.list_files(child, "data.path", recursive=False)
            by_class[storage.name(child)] = sorted(study for study, study_is_dir in entries if study_is_dir)
            ignored += [file for file, file_is_dir in entries if not file_is_dir]
        return by_class

    def rows(self, piece: dict, settings: dict) -> Iterator[RawRow]:
        study = str(piece["file"])
        try:
            files = {storage.name(file): storage.read_bytes(file)
                     for file, is_dir in storage.list_files(study, "data.path", recursive=False)
                     if not is_dir and not storage.name(file).startswith(".")}
            content = replace(read_series(files, study, settings["max_pixels"]), window=settings.get("window"))
        except OSError as error:
            content = BadImage(f"{study}: cannot read the study ({error.strerror or storage.first_line(error)})",
                               MISSING_FILE)
        except BadImage as error:  # judged when the row is decoded, as every source's bad content is
            content = error
        yield RawRow(str(piece["row_ids"][0]), row_label(piece["labels"][0]), study, content, name=Path(study).name)

    def holds(self, folder: Path) -> bool:
        return False  # a folder of DICOM files is read as 2-D slices unless data.source says series


register(DicomSeriesSource())
