"""Image bytes -> a grayscale uint8 array, with a guard against decompression bombs.

Everything a dataset holds (PNG, JPEG, DICOM, an array from an .npz) goes through `decode_native`,
which gives the image at its own size; the manifest hashes that array, and readers resize it.
A row that cannot be used raises `BadImage`, whose `reason` groups it in data reports.
"""

from __future__ import annotations

import hashlib
import io
from contextlib import contextmanager
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from medray.data.dicom import dicom_to_gray, is_dicom
from medray.errors import BadImage, MedrayError

# Modes whose values are not 0-255 and are stretched to 8 bits instead of clipped.
HIGH_DEPTH_MODES = {"I;16", "I;16B", "I;16L", "I", "F"}


def decode_native(content: bytes | np.ndarray, max_pixels: int, where: str, what: str = "image"
                  ) -> tuple[np.ndarray, str]:
    """Any row's image at its own size as (H x W uint8, the mode it was stored in)."""
    if isinstance(content, np.ndarray):  # .npz rows arrive decoded (H x W, or H x W x 3)
        return gray_array(content), "L" if content.ndim == 2 else "RGB"
    if not content:
        raise BadImage(f"{where}: the {what} is empty (0 bytes); remove or replace it", "empty file")
    if is_dicom(content):
        return dicom_to_gray(content, max_pixels, where)
    with open_checked(content, max_pixels, where, what) as image:
        return np.asarray(_to_gray(image), dtype=np.uint8), image.mode


def decode_gray(data: bytes | np.ndarray, size: int, max_pixels: int, where: str) -> np.ndarray:
    """Decode one image to (size, size) uint8; `where` names the file or row in errors."""
    return resize_gray(decode_native(data, max_pixels, where)[0], size)


def resize_gray(pixels: np.ndarray, size: int) -> np.ndarray:
    """An already-decoded array (H x W, or H x W x 3 for RGB MedMNIST sets) -> (size, size) uint8."""
    image = Image.fromarray(gray_array(pixels))
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def gray_array(pixels: np.ndarray) -> np.ndarray:
    pixels = np.asarray(pixels, dtype=np.uint8)
    return pixels if pixels.ndim == 2 else np.asarray(Image.fromarray(pixels).convert("L"))


def content_hash(pixels: np.ndarray) -> str:
    """Of the decoded pixels and their shape: the same scan stored twice hashes alike, a re-encode not."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    return hashlib.sha1(f"{pixels.shape}".encode() + pixels.tobytes()).hexdigest()


def decode_mask(data: bytes, size: int, max_pixels: int, where: str) -> np.ndarray:
    """A lesion mask resized like its image, kept binary (255 = lesion) by nearest-neighbour."""
    with open_checked(data, max_pixels, where, "mask") as image:
        mask = np.asarray(image.convert("L").resize((size, size), Image.Resampling.NEAREST))
    return np.where(mask > 127, 255, 0).astype(np.uint8)


@contextmanager
def open_checked(data: bytes, max_pixels: int, where: str, what: str) -> Iterator[Image.Image]:
    if not data:
        raise BadImage(f"{where}: the {what} is empty (0 bytes); remove or replace it", "empty file")
    try:
        with Image.open(io.BytesIO(data)) as image:
            # Checked before the pixels are decoded, so a bomb never allocates its memory.
            if image.width * image.height > max_pixels:
                raise BadImage(
                    f"{where}: {what} is {image.width}x{image.height} pixels, over "
                    f"data.max_image_pixels={max_pixels}; raise the limit only for files you trust",
                    "over pixel limit")
            yield image
    except UnidentifiedImageError:
        raise BadImage(f"{where}: cannot decode the {what} (not an image file); remove or replace it",
                       "not an image") from None
    except Image.DecompressionBombError as error:  # Pillow's own, even larger limit
        raise BadImage(f"{where}: {what} is too large ({error})", "over pixel limit") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise BadImage(f"{where}: cannot decode the {what} ({error}); remove or replace it") from None


def _to_gray(image: Image.Image) -> Image.Image:
    if image.mode in HIGH_DEPTH_MODES:
        values = np.asarray(image, dtype=np.float32)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        return Image.fromarray(np.round(scaled).astype(np.uint8))
    if image.mode in ("LA", "RGBA", "PA"):  # transparent pixels count as black, not as their hidden colour
        return Image.alpha_composite(Image.new("RGBA", image.size, "black"), image.convert("RGBA")).convert("L")
    return image.convert("L")
