"""DICOM: modality rescale, the file's window, MONOCHROME1 inverted; tiny files written with pydicom."""

import re
from pathlib import Path

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


def test_compressed_dicom_decodes_like_its_original_or_names_the_syntax_and_what_would_decode_it(
        tmp_path, monkeypatch):
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEG2000Lossless, JPEGLSLossless

    def decoded(name: str) -> np.ndarray:  # pydicom's bundled test files: in its wheel, no download
        return decode_native(Path(get_testdata_file(name)).read_bytes(), 10**6, name)[0]

    original = decoded("MR_small.dcm")
    assert np.array_equal(decoded("MR_small_jpeg_ls_lossless.dcm"), original)  # JPEG-LS Lossless
    assert np.array_equal(decoded("MR_small_jp2klossless.dcm"), original)  # JPEG 2000 Lossless
    # JPEG Lossless (Process 14, SV1) by GDCM, against the same colour bars stored RLE Lossless
    assert np.array_equal(decoded("SC_rgb_jpeg_gdcm.dcm"), decoded("SC_rgb_rle.dcm"))
    # A file written here in JPEG 2000 Lossless (64 x 64: OpenJPEG's default resolution levels need it)
    data = write_dicom(tmp_path / "plain.dcm", np.tile(RAMP, (8, 8)))
    dataset = pydicom.dcmread(tmp_path / "plain.dcm")
    dataset.compress(JPEG2000Lossless)
    dataset.save_as(tmp_path / "j2k.dcm")
    assert np.array_equal(decode_native((tmp_path / "j2k.dcm").read_bytes(), 10**6, "j2k.dcm")[0],
                          decode_native(data, 10**6, "plain.dcm")[0])

    # A transfer syntax pydicom has no decoder for (H.264 video): one line naming the file and the UID.
    dataset.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.102"
    dataset.PixelData = encapsulate([b"\x00\x00\x00\x01 not decodable here"])
    dataset.save_as(tmp_path / "h264.dcm")
    with pytest.raises(BadImage) as error:
        decode_native((tmp_path / "h264.dcm").read_bytes(), 10**6, "h264.dcm")
    assert "\n" not in str(error.value)
    assert re.search(r"h264\.dcm: .*transfer syntax 1\.2\.840\.10008\.1\.2\.4\.102 .*no decoder", str(error.value))
    # An install without the pylibjpeg plugins: the file, the UID and the packages that decode it.
    decoder = get_decoder(JPEGLSLossless)
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {"pylibjpeg": ("pylibjpeg>=2.0", "pylibjpeg-libjpeg>=2.1")})
    with pytest.raises(BadImage) as error:
        decoded("MR_small_jpeg_ls_lossless.dcm")
    assert "\n" not in str(error.value) and re.search(
        r"MR_small_jpeg_ls_lossless\.dcm: .*1\.2\.840\.10008\.1\.2\.4\.80 \(JPEG-LS Lossless.*"
        r"pylibjpeg - requires pylibjpeg>=2\.0 and pylibjpeg-libjpeg>=2\.1", str(error.value))
