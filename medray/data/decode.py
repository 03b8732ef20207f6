"""Image bytes -> a square grayscale uint8 array, with a guard against decompression bombs."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from medray.errors import MedrayError

# Modes whose values are not 0-255 and are stretched to 8 bits instead of clipped.
HIGH_DEPTH_MODES = {"I;16", "I;16B", "I;16L", "I", "F"}


def decode_gray(data: bytes, size: int, max_pixels: int, where: str) -> np.ndarray:
    """Decode one image to (size, size) uint8; `where` names the file or row in errors."""
    if not data:
        raise MedrayError(f"{where}: the image is empty (0 bytes); remove or replace it")
    try:
        with Image.open(io.BytesIO(data)) as image:
            # Checked before the pixels are decoded, so a bomb never allocates its memory.
            if image.width * image.height > max_pixels:
                raise MedrayError(
                    f"{where}: image is {image.width}x{image.height} pixels, over "
                    f"data.max_image_pixels={max_pixels}; raise the limit only for files you trust"
                )
            gray = _to_gray(image)
            return np.asarray(gray.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise MedrayError(f"{where}: cannot decode the image ({error}); remove or replace it") from None


def _to_gray(image: Image.Image) -> Image.Image:
    if image.mode in HIGH_DEPTH_MODES:
        values = np.asarray(image, dtype=np.float32)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        return Image.fromarray(scaled.astype(np.uint8))
    return image.convert("L")
