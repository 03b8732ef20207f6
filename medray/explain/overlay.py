"""A heat map over the grayscale original, as PNG bytes a person can look at."""

from __future__ import annotations

import io

import matplotlib
import numpy as np
from PIL import Image

# Small inputs (28-64 px) are enlarged so that an overlay is readable on screen.
MIN_OVERLAY_SIDE = 224
ALPHA = 0.45


def overlay_png(pixels: np.ndarray, cam: np.ndarray) -> bytes:
    """pixels: (H, W) uint8; cam: (h, w) in [0, 1] at feature resolution."""
    height, width = pixels.shape
    scale = max(1, int(np.ceil(MIN_OVERLAY_SIDE / max(height, width))))
    size = (width * scale, height * scale)
    gray = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BICUBIC), dtype=np.float32) / 255
    heat = np.asarray(Image.fromarray(cam.astype(np.float32), mode="F").resize(size, Image.Resampling.BILINEAR))
    colored = matplotlib.colormaps["jet"](np.clip(heat, 0, 1))[..., :3]
    blended = (1 - ALPHA) * gray[..., None] + ALPHA * colored
    buffer = io.BytesIO()
    Image.fromarray((blended * 255).round().astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
