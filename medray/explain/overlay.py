"""A heat map over the original (gray or colour), as PNG bytes a person can look at."""

from __future__ import annotations

import io

import matplotlib
import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw

# Small inputs (28-64 px) are enlarged so that an overlay is readable on screen.
MIN_OVERLAY_SIDE = 224
ALPHA = 0.45
COLORMAP = "jet"
COLORBAR_WIDTH = 40
# The colormap as a 256-entry table: indexing it costs a fraction of calling the colormap per pixel.
COLORMAP_TABLE = (matplotlib.colormaps[COLORMAP](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.float32)
# zlib level 1: about five times faster than PIL's default 6 for files about a quarter larger; at
# the default an overlay's encoding, not its CAM, limited the bulk job.
PNG_COMPRESS_LEVEL = 1


def overlay_png(pixels: np.ndarray, cam: np.ndarray, colorbar: bool = False) -> bytes:
    """pixels: (H, W) gray or (H, W, 3) RGB uint8, drawn as they are; cam: (h, w) in [0, 1], at
    feature resolution or already (H, W).

    The heat map is blended at the image's own resolution, then enlarged by whole pixels (nearest
    neighbour): every pixel the model saw stays one square, no detail is invented by interpolation,
    and the repeated pixels make the PNG about five times cheaper to encode than a smoothly enlarged
    picture. An all-zero map is not drawn as a blank heat map (it would read as "nothing here"): the
    original is shown with a red frame and the words "empty map".
    """
    height, width = pixels.shape[:2]
    scale = max(1, int(np.ceil(MIN_OVERLAY_SIDE / max(height, width))))
    size = (width * scale, height * scale)
    if cam.max() <= 0:
        original = Image.fromarray(pixels).resize(size, Image.Resampling.NEAREST)
        return _png(_flag_empty(original.convert("RGB")))
    heat = resize_map(cam, height, width)
    colored = COLORMAP_TABLE[np.rint(np.clip(heat, 0, 1) * 255).astype(np.uint8)]
    original = pixels.astype(np.float32) if pixels.ndim == 3 else pixels.astype(np.float32)[..., None]
    blended = (1 - ALPHA) * original + ALPHA * colored
    image = Image.fromarray(np.rint(blended).astype(np.uint8)).resize(size, Image.Resampling.NEAREST)
    return _png(_with_colorbar(image) if colorbar else image)


def resize_map(cam: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w) map -> (height, width) float32, bilinear (Pillow's, which also filters when it
    shrinks); a map of values in [0, 1] stays in [0, 1]. How a map at feature resolution is laid on
    its image, in the overlays and in the stored maps alike."""
    cam = np.asarray(cam, np.float32)
    if cam.shape == (height, width):
        return cam
    return np.asarray(Image.fromarray(cam).resize((width, height), Image.Resampling.BILINEAR))  # float32: mode F


def encode_overlays(table: pa.Table, colorbar: bool) -> pa.Table:
    """The overlay PNG of every map of a block of the bulk job's output, in CPU tasks after the CAM
    actors: encoding costs more than a map, and the actors' GPUs should not wait on it. Kept apart
    from the CAM code so that these tasks never import TensorFlow."""
    pngs = [overlay_png(original_pixels(row), np.asarray(row["cam"], np.float32).reshape(row["cam_height"],
                                                                                          row["cam_width"]), colorbar)
            for row in table.select(["overlay_pixels", "overlay_height", "overlay_width", "cam", "cam_height",
                                     "cam_width"]).to_pylist()]
    return (table.drop_columns(["overlay_pixels", "overlay_height", "overlay_width"])
            .append_column("overlay", pa.array(pngs, pa.binary())))


def original_pixels(row: dict) -> np.ndarray:
    """A row's decoded image: (H, W) gray or (H, W, 3) RGB uint8."""
    pixels = np.frombuffer(row["overlay_pixels"], np.uint8).reshape(row["overlay_height"], row["overlay_width"], -1)
    return pixels[..., 0] if pixels.shape[2] == 1 else pixels


def _flag_empty(image: Image.Image) -> Image.Image:
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, image.width - 1, image.height - 1), outline=(255, 0, 0), width=6)
    draw.rectangle((6, 6, 110, 24), fill=(255, 0, 0))
    draw.text((10, 9), "empty map", fill=(255, 255, 255))
    return image


def _with_colorbar(image: Image.Image) -> Image.Image:
    """A vertical scale to the right: 1 (top) to 0 (bottom), in the overlay's colours."""
    bar_height = image.height - 20
    values = np.linspace(1, 0, bar_height)[:, np.newaxis].repeat(12, axis=1)
    bar = (matplotlib.colormaps[COLORMAP](values)[..., :3] * 255).round().astype(np.uint8)
    canvas = Image.new("RGB", (image.width + COLORBAR_WIDTH, image.height), (255, 255, 255))
    canvas.paste(image, (0, 0))
    canvas.paste(Image.fromarray(bar), (image.width + 6, 10))
    draw = ImageDraw.Draw(canvas)
    draw.text((image.width + 21, 6), "1", fill=(0, 0, 0))
    draw.text((image.width + 21, image.height - 18), "0", fill=(0, 0, 0))
    return canvas


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()
