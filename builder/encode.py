"""Image encoding for the shards."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# zlib level 1: fractal images are mostly zeros, so level 1 is within a few
# percent of level 9 in size at a fraction of the time.
PNG_COMPRESS_LEVEL = 1


def encode_png(image: np.ndarray) -> bytes:
    """uint8 (H, W) grayscale or (H, W, 3) RGB -> PNG bytes (8-bit L or RGB)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> uint8 (H, W) or (H, W, 3)."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image)
