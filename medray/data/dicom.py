"""DICOM (.dcm) -> 8-bit grayscale, the way a radiologist's viewer shows it.

Stored values become physical ones through the modality LUT (RescaleSlope / RescaleIntercept),
then the file's own window (WindowCenter / WindowWidth) maps them to 0-255; without a window the
image's range is stretched. MONOCHROME1 stores white as the lowest value, so it is inverted.
pydicom reads the file; nothing in it is ever unpickled or executed. Compressed pixel data (JPEG
Lossless, JPEG-LS, JPEG 2000) is decoded by the pylibjpeg plugins pydicom documents
(pylibjpeg-libjpeg, pylibjpeg-openjpeg), which medray depends on.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
from PIL import Image
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, get_decoder

from medray.errors import BadImage


# Every DICOM Part 10 file has "DICM" after a 128-byte preamble.
MAGIC_OFFSET = 128


def is_dicom(data: bytes) -> bool:
    return data[MAGIC_OFFSET:MAGIC_OFFSET + 4] == b"DICM"


def dicom_to_gray(data: bytes, max_pixels: int, where: str) -> tuple[np.ndarray, str]:
    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
        rows, columns = int(dataset.Rows), int(dataset.Columns)
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
    except (InvalidDicomError, AttributeError, ValueError, TypeError, EOFError, OSError) as error:
        raise BadImage(f"{where}: cannot read the DICOM header ({error}); remove or replace it") from None
    if rows * columns * frames > max_pixels:
        raise BadImage(f"{where}: DICOM is {columns}x{rows}x{frames} pixels, over data.max_image_pixels="
                       f"{max_pixels}; raise the limit only for files you trust", "over pixel limit")
    if frames > 1:
        raise BadImage(f"{where}: DICOM holds {frames} frames; medray classifies 2-D images, so export "
                       "one slice per file", "unsupported DICOM")
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2"))
    try:
        stored = dataset.pixel_array
    except Exception as error:  # noqa: BLE001  (each pixel-data decoder raises its own types)
        raise _undecodable(dataset, where, error) from None
    if stored.ndim == 3:  # colour (RGB; pydicom converts YBR to RGB)
        return np.asarray(Image.fromarray(stored.astype(np.uint8)).convert("L")), f"DICOM {photometric}"
    values = np.asarray(apply_modality_lut(stored, dataset), dtype=np.float64)
    low, high = _window(dataset, values)
    scaled = np.clip((values - low) / (high - low), 0.0, 1.0) * 255.0 if high > low else np.zeros_like(values)
    gray = np.round(scaled).astype(np.uint8)
    if photometric == "MONOCHROME1":
        gray = 255 - gray
    return gray, f"DICOM {photometric}"


def _missing_decoder(dataset) -> str | None:
    """Why no installed package decodes the file's transfer syntax, or None if one does."""
    uid = dataset.file_meta.get("TransferSyntaxUID")
    if uid is None:
        return None
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        return (f"pydicom {pydicom.__version__} has no decoder for it; convert the file to an uncompressed "
                "transfer syntax (e.g. `gdcmconv --raw` or dcmtk's `dcmdjpeg`)")
    if decoder.is_available:
        return None
    # pydicom's own words, one per plugin: "pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1"
    return f"no decoder for it is installed; any of these would decode it: {'; '.join(decoder.missing_dependencies)}"


def _undecodable(dataset, where: str, error: Exception) -> BadImage:
    """One line: the file, its transfer syntax (name and UID) and what would decode it; or, when a
    decoder is installed and still fails, the decoder's first line (a corrupt or truncated file)."""
    missing = _missing_decoder(dataset)
    if missing is None:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return BadImage(f"{where}: cannot decode the DICOM pixel data ({first_line}); remove or replace it")
    uid = dataset.file_meta.TransferSyntaxUID
    return BadImage(f"{where}: DICOM pixel data in transfer syntax {uid} ({uid.name}): {missing}", "unsupported DICOM")


def _window(dataset, values: np.ndarray) -> tuple[float, float]:
    """The file's first window (center, width) as (lowest, highest) value shown; else the data's range."""
    center, width = dataset.get("WindowCenter"), dataset.get("WindowWidth")
    if center is not None and width is not None:
        center = float(center[0] if isinstance(center, pydicom.multival.MultiValue) else center)
        width = float(width[0] if isinstance(width, pydicom.multival.MultiValue) else width)
        if width > 0:
            return center - width / 2.0, center + width / 2.0
    return float(values.min()), float(values.max())
