"""Image bytes -> a uint8 array, gray (H x W) or RGB (H x W x 3), with a guard against decompression bombs.

Everything a dataset holds (PNG, JPEG, DICOM, an array from an .npz) goes through `decode_native`,
which gives the image at its own size; the manifest hashes that array, and readers resize it.
A row that cannot be used raises `BadImage`, whose `reason` groups it in data reports.
"""

from __future__ import annotations

import hashlib
import io
import warnings as python_warnings
from contextlib import contextmanager
from typing import Iterator

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from medray.data.dicom import dicom_to_gray, is_dicom
from medray.data.volumes import VOLUME_MODE, Volume, resize_mask_volume, resize_volume, volume_voxels
from medray.errors import BadImage

# Modes whose values are not 0-255 and are stretched to 8 bits instead of clipped.
HIGH_DEPTH_MODES = {"I;16", "I;16B", "I;16L", "I", "F"}
# Modes that hold no colour: decoded gray even when RGB is asked for (then repeated over 3 channels).
GRAY_MODES = {"1", "L", "LA", "La", *HIGH_DEPTH_MODES}


def decode_native(content: bytes | np.ndarray, max_pixels: int, where: str, what: str = "image",
                  warnings: list[str] | None = None, color: str = "gray") -> tuple[np.ndarray, str]:
    """Any row's image at its own size, as a viewer shows it: (pixels, the mode it was stored in).

    `color` "gray" gives H x W uint8; "rgb" gives H x W x 3 uint8 (a gray image's value in all three
    channels); DICOM is always gray.

    An EXIF orientation is applied; one that cannot be used is ignored (storage order) and said
    in `warnings`, if given: never a reason to refuse the image.

    Raises BadImage for every failure: Pillow and pydicom raise many types on malformed files
    (struct.error, TypeError, IndexError, ...), and an exception that escaped here would stop a
    Ray worker with a traceback instead of naming the row (or skipping it, with on_bad_image: skip).
    """
    try:
        pixels, mode = _decode_native(content, max_pixels, where, what, [] if warnings is None else warnings,
                                      color)
        return (np.repeat(pixels[..., None], 3, axis=2) if color == "rgb" and pixels.ndim == 2 else pixels), mode
    except BadImage:
        raise
    except Exception as error:  # noqa: BLE001  (see the docstring)
        raise BadImage(f"{where}: cannot decode the {what} ({type(error).__name__}: {error}); "
                       "remove or replace it") from None


def _decode_native(content: bytes | np.ndarray, max_pixels: int, where: str, what: str,
                   warnings: list[str], color: str) -> tuple[np.ndarray, str]:
    if isinstance(content, Volume):  # (D, H, W): volumes are gray whatever data.color says
        return volume_voxels(content, where), VOLUME_MODE
    if isinstance(content, np.ndarray):  # .npz rows arrive decoded (H x W, H x W x 1 or H x W x 3)
        content = np.asarray(content[..., 0] if content.ndim == 3 and content.shape[2] == 1 else content, np.uint8)
        mode = "L" if content.ndim == 2 else "RGB"
        return (content if color == "rgb" else gray_array(content)), mode
    if not content:
        raise BadImage(f"{where}: the {what} is empty (0 bytes); remove or replace it", "empty file")
    if is_dicom(content):
        return dicom_to_gray(content, max_pixels, where)
    # Pillow warns (rather than fails) about what it skips, e.g. a corrupt EXIF block read as the file
    # opens: counted with the row like an ignored orientation, never printed on the console.
    with python_warnings.catch_warnings(record=True) as pillow_warnings:
        python_warnings.simplefilter("always")
        with open_checked(content, max_pixels, where, what) as image:
            oriented = exif_oriented(image, warnings)
            converted = _to_rgb(oriented) if color == "rgb" and image.mode not in GRAY_MODES else _to_gray(oriented)
            pixels = np.asarray(converted, dtype=np.uint8)
    warnings.extend(pillow_note(warning.message) for warning in pillow_warnings)
    return pixels, image.mode


# The kind of a Pillow warning counted with its row (data.json's warnings.by_kind); an EXIF block
# Pillow cannot read leaves the storage order, as an ignored orientation does.
PILLOW_WARNING = "decoder warning"


def pillow_note(message: Warning | str) -> str:
    text = " ".join(str(message).split())
    return f"{ORIENTATION_IGNORED if 'EXIF' in text else PILLOW_WARNING}: {text}"


# EXIF orientations 2-8 are flips and rotations of the stored pixels; 1 is "as stored".
EXIF_ORIENTATIONS = range(1, 9)
ORIENTATION_IGNORED = "EXIF orientation ignored"


def exif_oriented(image: Image.Image, warnings: list[str]) -> Image.Image:
    """The image as a viewer displays it (Pillow's exif_transpose). A malformed or out-of-range
    orientation leaves the storage order and adds a warning: the pixels themselves are fine."""
    try:
        with python_warnings.catch_warnings(record=True) as pillow_warnings:
            python_warnings.simplefilter("always")
            orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception as error:  # noqa: BLE001  (a malformed EXIF block raises many types)
        warnings.append(f"{ORIENTATION_IGNORED}: unreadable EXIF ({type(error).__name__})")
        return image
    if pillow_warnings:  # Pillow reads what it can of a truncated EXIF block and warns
        warnings.append(pillow_note(pillow_warnings[0].message))
        return image
    if orientation == 1:
        return image
    if not isinstance(orientation, int) or orientation not in EXIF_ORIENTATIONS:
        warnings.append(f"{ORIENTATION_IGNORED}: value {orientation!r} is not 1-8")
        return image
    return ImageOps.exif_transpose(image)


def decode_gray(data: bytes | np.ndarray, size: int, max_pixels: int, where: str) -> np.ndarray:
    """Decode one image to (size, size) uint8; `where` names the file or row in errors."""
    return resize_gray(decode_native(data, max_pixels, where)[0], size)


def resize_gray(pixels: np.ndarray, size: int) -> np.ndarray:
    """An already-decoded array (H x W, or H x W x 3 for RGB MedMNIST sets) -> (size, size) uint8."""
    return resize_pixels(gray_array(pixels), size)


def resize_pixels(pixels: np.ndarray, size: int | tuple[int, ...]) -> np.ndarray:
    """(H x W) or (H x W x 3) uint8 -> (size, size) or (size, size, 3), channels kept; a volume
    (D x H x W) -> `size` when size is the model's (D, H, W)."""
    if np.ndim(size) == 1 and len(size) == 3:
        return resize_volume(pixels, tuple(size))
    image = Image.fromarray(np.asarray(pixels, dtype=np.uint8))
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


# A colour image whose channels differ by less than this on average (0-255) is gray stored as
# colour (X-rays saved as RGB JPEGs: JPEG's chroma noise keeps them from being exactly equal).
COLOUR_SPREAD = 3.0


def is_colour(pixels: np.ndarray) -> bool:
    """Whether an image carries colour: H x W x 3 with channels that differ, not gray saved as RGB."""
    if pixels.ndim != 3 or pixels.shape[2] != 3:  # (D, H, W) volumes are gray
        return False
    channels = pixels.astype(np.int16)
    return float((channels.max(axis=2) - channels.min(axis=2)).mean()) > COLOUR_SPREAD


def gray_array(pixels: np.ndarray) -> np.ndarray:
    pixels = np.asarray(pixels, dtype=np.uint8)
    return pixels if pixels.ndim == 2 else np.asarray(Image.fromarray(pixels).convert("L"))


def content_hash(pixels: np.ndarray) -> str:
    """Of the decoded pixels and their shape: the same scan stored twice hashes alike, a re-encode not."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    return hashlib.sha1(f"{pixels.shape}".encode() + pixels.tobytes()).hexdigest()


def decode_mask(data: bytes | Volume | BadImage, size: int | tuple[int, ...], max_pixels: int, where: str,
                image_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A lesion mask resized like its image, kept binary (255 = lesion) by nearest-neighbour.

    `image_shape`: the image's own (height, width). A mask of another shape (a transposed or
    cropped one) would be stretched onto the image and score the maps against the wrong pixels, so
    it raises BadImage; one of the same shape at another resolution lines up and is resized alike.
    A Volume mask is resized to the (D, H, W) `size`; its shape must be its volume's (D, H, W)
    `image_shape` exactly (both as read, e.g. after the same reorientation), else BadImage.
    A BadImage (a mask file that could not be read) is raised as it is.
    """
    if isinstance(data, BadImage):
        raise data
    if isinstance(data, Volume):
        voxels = np.asarray(data.voxels)
        voxels = voxels[..., 0] if voxels.ndim == 4 and voxels.shape[-1] == 1 else voxels
        if image_shape is not None and voxels.shape != tuple(image_shape):
            raise BadImage(f"{where}: the mask is {'x'.join(map(str, voxels.shape))} voxels (D x H x W) but its "
                           f"volume {'x'.join(map(str, image_shape))}; give each volume a mask of its own shape",
                           "mask shape")
        return resize_mask_volume(voxels, tuple(size))
    with open_checked(data, max_pixels, where, "mask") as image:
        if image_shape is not None and not same_shape(image.height, image.width, *image_shape):
            raise BadImage(f"{where}: the mask is {image.width}x{image.height} pixels but its image "
                           f"{image_shape[1]}x{image_shape[0]}; give each image a mask of its own width and height",
                           "mask shape")
        mask = np.asarray(image.convert("L").resize((size, size), Image.Resampling.NEAREST))
    return np.where(mask > 127, 255, 0).astype(np.uint8)


def same_shape(height: int, width: int, image_height: int, image_width: int) -> bool:
    """Whether a (height, width) mask has its image's proportions, give or take a pixel of rounding."""
    return abs(height - width * image_height / image_width) <= 1


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


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "PA", "P"):  # transparent pixels count as black, as in _to_gray
        return Image.alpha_composite(Image.new("RGBA", image.size, "black"), image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def _to_gray(image: Image.Image) -> Image.Image:
    if image.mode in HIGH_DEPTH_MODES:
        values = np.asarray(image, dtype=np.float32)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        return Image.fromarray(np.round(scaled).astype(np.uint8))
    if image.mode in ("LA", "RGBA", "PA"):  # transparent pixels count as black, not as their hidden colour
        return Image.alpha_composite(Image.new("RGBA", image.size, "black"), image.convert("RGBA")).convert("L")
    return image.convert("L")


def decode_row(row, max_pixels: int, warnings: list[str] | None = None,
               color: str = "gray") -> tuple[np.ndarray, str]:
    """A source's RawRow as its image at its own size and stored mode; BadImage if it cannot be
    used; what was usable but odd (an EXIF orientation ignored) is appended to `warnings`."""
    if isinstance(row.content, BadImage):
        raise row.content
    return decode_native(row.content, max_pixels, row.where, warnings=warnings, color=color)


def decode_for_model(content: bytes | np.ndarray, size: int, max_pixels: int, where: str,
                     color: str = "gray") -> np.ndarray:
    """Image bytes as every stage's model sees them: (size, size) gray or (size, size, 3) RGB uint8.
    The one path from bytes to model pixels, shared by the Ray Data readers and `medray serve`, so
    an image served over HTTP gets exactly the pixels the batch job gave it. BadImage if unusable."""
    return resize_pixels(decode_native(content, max_pixels, where, color=color)[0], size)
