"""DICOM: modality rescale, the file's window, MONOCHROME1 inverted; tiny files written with pydicom."""

import numpy as np
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from medray.data.decode import decode_native
from medray.errors import BadImage


def write_dicom(path, pixels: np.ndarray, photometric="MONOCHROME2", slope=None, intercept=None,
                window=None) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, photometric
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 16, 15
    dataset.PixelRepresentation = 0
    if slope is not None:
        dataset.RescaleSlope, dataset.RescaleIntercept = slope, intercept
    if window is not None:
        dataset.WindowCenter, dataset.WindowWidth = window
    dataset.PixelData = pixels.astype(np.uint16).tobytes()
    dataset.save_as(path, enforce_file_format=True)
    return path.read_bytes()


RAMP = np.arange(64, dtype=np.uint16).reshape(8, 8) * 10  # stored values 0..630


def test_without_a_window_the_rescaled_range_is_stretched_to_8_bits(tmp_path):
    pixels, mode = decode_native(write_dicom(tmp_path / "a.dcm", RAMP), 10**6, "a.dcm")
    assert mode == "DICOM MONOCHROME2" and pixels.dtype == np.uint8 and pixels.shape == (8, 8)
    assert pixels.min() == 0 and pixels.max() == 255 and pixels[0, 1] > pixels[0, 0]


def test_slope_and_intercept_apply_before_the_window(tmp_path):
    # Hounsfield-like: value = 2 * stored - 1000; window 0 +- 100 shows stored 450..550 only.
    data = write_dicom(tmp_path / "ct.dcm", RAMP, slope=2, intercept=-1000, window=(0, 200))
    pixels, _ = decode_native(data, 10**6, "ct.dcm")
    values = RAMP * 2.0 - 1000
    assert np.all(pixels[values <= -100] == 0) and np.all(pixels[values >= 100] == 255)
    inside = (values > -100) & (values < 100)
    assert inside.any() and np.all((pixels[inside] > 0) & (pixels[inside] < 255))
    # the same file without rescale would put every stored value (0..630) above the window
    plain, _ = decode_native(write_dicom(tmp_path / "raw.dcm", RAMP, window=(0, 200)), 10**6, "raw.dcm")
    assert (plain == 255).sum() > (pixels == 255).sum()


def test_monochrome1_is_inverted(tmp_path):
    two, _ = decode_native(write_dicom(tmp_path / "m2.dcm", RAMP), 10**6, "m2.dcm")
    one, mode = decode_native(write_dicom(tmp_path / "m1.dcm", RAMP, "MONOCHROME1"), 10**6, "m1.dcm")
    assert mode == "DICOM MONOCHROME1" and np.array_equal(one, 255 - two)


def test_dicom_over_the_pixel_limit_is_refused_before_decoding(tmp_path):
    with pytest.raises(BadImage, match="big.dcm: DICOM is 8x8x1 pixels, over data.max_image_pixels=10") as error:
        decode_native(write_dicom(tmp_path / "big.dcm", RAMP), 10, "big.dcm")
    assert error.value.reason == "over pixel limit"


def test_truncated_dicom_is_a_bad_image_named_by_file(tmp_path):
    data = write_dicom(tmp_path / "cut.dcm", RAMP)
    with pytest.raises(BadImage, match="cut.dcm: cannot"):
        decode_native(data[:200], 10**6, "cut.dcm")
