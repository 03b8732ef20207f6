"""Small generated datasets in every source layout, for the data-layer tests."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from medray.config import DataConfig


def image_bytes(array: np.ndarray, mode: str | None = None, format: str = "PNG") -> bytes:
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def scan(seed: int, size: int = 16) -> np.ndarray:
    """A distinct little image per seed."""
    return np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def salted_folder_tree(root: Path) -> dict[str, list[Path]]:
    """root/<split>/<class>/: good images in several modes plus every kind of bad file."""
    seed = 0
    for split, per_class in (("train", 4), ("val", 2), ("test", 2)):
        for class_name in ("NORMAL", "PNEUMONIA"):
            for index in range(per_class):
                seed += 1
                write(root / split / class_name / f"{index}.png", image_bytes(scan(seed)))
    deep = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 16)  # a 12-bit X-ray in a 16-bit PNG
    good_extra = [write(root / "train" / "NORMAL" / "deep16.png", image_bytes(deep)),
                  write(root / "train" / "NORMAL" / "colour.jpg", image_bytes(np.dstack([scan(90)] * 3),
                                                                           format="JPEG"))]
    jpeg = image_bytes(np.dstack([scan(91)] * 3), format="JPEG")
    bad = {
        "not an image": write(root / "train" / "PNEUMONIA" / "garbage.png", b"these are not pixels"),
        "empty file": write(root / "train" / "PNEUMONIA" / "empty.jpeg", b""),
        "corrupt or truncated": write(root / "train" / "NORMAL" / "truncated.jpg", jpeg[: len(jpeg) // 2]),
        "over pixel limit": write(root / "test" / "PNEUMONIA" / "huge.png", image_bytes(scan(92, size=64))),
    }
    ignored = [write(root / "train" / "NORMAL" / ".DS_Store", b"\0\0\0\1Bud1"),
               write(root / "train" / "PNEUMONIA" / "notes.txt", b"patient 7 rescanned"),
               write(root / "README.md", b"# chest x-rays")]
    return {"good_extra": good_extra, "bad": bad, "ignored": ignored}


def folder_config(root: Path, **overrides) -> DataConfig:
    # 40 x 40 admits every good image (16 x 16) but not huge.png (64 x 64)
    return DataConfig(path=root, source="folders", max_image_pixels=40 * 40, **overrides)


def hf_parquet(path: Path, images: list[bytes], labels: list, class_names: list[str] | None = None,
               binary: bool = False, names: list[str] | None = None) -> Path:
    """A Hugging Face style file: image struct {bytes, path} (or plain binary), label column."""
    column = pa.array(images, pa.binary()) if binary else pa.array(
        [{"bytes": data, "path": name} for data, name in zip(images, names or [None] * len(images))],
        pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    table = pa.table({"image": column, "label": labels})
    if class_names:
        table = table.replace_schema_metadata({b"huggingface": (
            '{"info": {"features": {"label": {"_type": "ClassLabel", "names": %s}}}}'
            % str(class_names).replace("'", '"')).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=4)
    return path


def copy_with_broken_row(parquet_dir: Path, out_dir: Path, split: str, row: int, column: str, content: bytes) -> Path:
    """A copy of a Hugging Face-style parquet folder whose `split` file has `content` as the bytes of
    `column` (an image struct) in `row`; returns that file."""
    import shutil

    shutil.copytree(parquet_dir, out_dir)
    file = next(out_dir.glob(f"{split}-*.parquet"))
    rows = pq.read_table(file).to_pylist()
    rows[row][column]["bytes"] = content
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(file)), file)
    return file
