"""Images decoded as a viewer shows them: EXIF orientation applied, a bad tag ignored with a warning."""

import io

import numpy as np
import pytest
from PIL import Image

from medray.config import DataConfig
from medray.data.decode import decode_native
from medray.data.manifest import prepare_source
from medray.data.sources import discover

from data_factory import hf_parquet, scan, write

ORIENTATION = 0x0112


def tagged_png(pixels: np.ndarray, orientation) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", exif=exif.tobytes())
    return buffer.getvalue()


STORED = np.arange(12 * 8, dtype=np.uint8).reshape(12, 8) * 2  # taller than wide: a rotation shows


@pytest.mark.parametrize("orientation, shown", [
    (1, STORED), (3, np.rot90(STORED, 2)), (6, np.rot90(STORED, -1)), (8, np.rot90(STORED, 1)),
    (2, STORED[:, ::-1]),
])
def test_exif_orientation_is_applied(orientation, shown):
    warnings = []
    pixels, _ = decode_native(tagged_png(STORED, orientation), 10**6, "x.png", warnings=warnings)
    assert np.array_equal(pixels, shown) and warnings == []


@pytest.mark.parametrize("orientation", [0, 9, 65535])
def test_an_out_of_range_orientation_keeps_storage_order_with_a_warning(orientation):
    warnings = []
    pixels, _ = decode_native(tagged_png(STORED, orientation), 10**6, "x.png", warnings=warnings)
    assert np.array_equal(pixels, STORED)
    assert warnings == [f"EXIF orientation ignored: value {orientation} is not 1-8"]


@pytest.mark.parametrize("exif, says", [(b"garbage!", "unreadable EXIF (SyntaxError)"),
                                         (b"II*\x00\xff\xff\x00\x00", "Corrupt EXIF data")])
def test_a_malformed_exif_block_keeps_storage_order_with_a_warning(exif, says):
    buffer = io.BytesIO()
    Image.fromarray(STORED).save(buffer, format="PNG", exif=exif)
    warnings = []
    pixels, _ = decode_native(buffer.getvalue(), 10**6, "x.png", warnings=warnings)
    assert np.array_equal(pixels, STORED) and len(warnings) == 1
    assert warnings[0].startswith("EXIF orientation ignored: ") and says in warnings[0]


def test_every_source_counts_ignored_orientations_in_data_json(tmp_path, ray_cluster):
    images = [tagged_png(scan(i), 6) for i in range(2)] + [tagged_png(scan(2), 9), tagged_png(scan(3), 1)]
    for split in ("train", "val", "test"):
        hf_parquet(tmp_path / "parquet" / f"{split}-0.parquet", images, [0, 1, 0, 1])
        for index, data in enumerate(images):
            write(tmp_path / "folders" / split / ("ab"[index % 2]) / f"{index}.png", data)
    for config in (DataConfig(path=tmp_path / "parquet"), DataConfig(path=tmp_path / "folders", source="folders")):
        _, report = prepare_source(discover(config), config, tmp_path / f"run-{config.source}")
        assert report["rows_used"] == 12 and report["rows_reported"] == 0
        assert report["warnings"]["count"] == 3
        assert report["warnings"]["by_kind"] == {"EXIF orientation ignored": 3}
        assert all("value 9 is not 1-8" in row["warning"] for row in report["warnings"]["rows"])
