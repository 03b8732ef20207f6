"""Image bytes -> a square grayscale uint8 array, with a guard against decompression bombs."""

from __future__ import annotations

import io
from contextlib import contextmanager
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from medray.errors import MedrayError

# Modes whose values are not 0-255 and are stretched to 8 bits instead of clipped.
HIGH_DEPTH_MODES = {"I;16", "I;16B", "I;16L", "I", "F"}


def decode_gray(data: bytes, size: int, max_pixels: int, where: str) -> np.ndarray:
    """Decode one image to (size, size) uint8; `where` names the file or row in errors."""
    with open_checked(data, max_pixels, where, "image") as image:
        gray = _to_gray(image)
        return np.asarray(gray.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def resize_gray(pixels: np.ndarray, size: int) -> np.ndarray:
    """An already-decoded array (H x W, or H x W x 3 for RGB MedMNIST sets) -> (size, size) uint8."""
    image = Image.fromarray(np.asarray(pixels, dtype=np.uint8))
    return np.asarray(image.convert("L").resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def decode_mask(data: bytes, size: int, max_pixels: int, where: str) -> np.ndarray:
    """A lesion mask resized like its image, kept binary (255 = lesion) by nearest-neighbour."""
    with open_checked(data, max_pixels, where, "mask") as image:
        mask = np.asarray(image.convert("L").resize((size, size), Image.Resampling.NEAREST))
    return np.where(mask > 127, 255, 0).astype(np.uint8)


@contextmanager
def open_checked(data: bytes, max_pixels: int, where: str, what: str) -> Iterator[Image.Image]:
    if not data:
        raise MedrayError(f"{where}: the {what} is empty (0 bytes); remove or replace it")
    try:
        with Image.open(io.BytesIO(data)) as image:
            # Checked before the pixels are decoded, so a bomb never allocates its memory.
            if image.width * image.height > max_pixels:
                raise MedrayError(
                    f"{where}: {what} is {image.width}x{image.height} pixels, over "
                    f"data.max_image_pixels={max_pixels}; raise the limit only for files you trust"
                )
            yield image
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise MedrayError(f"{where}: cannot decode the {what} ({error}); remove or replace it") from None


def _to_gray(image: Image.Image) -> Image.Image:
    if image.mode in HIGH_DEPTH_MODES:
        values = np.asarray(image, dtype=np.float32)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        return Image.fromarray(scaled.astype(np.uint8))
    return image.convert("L")
