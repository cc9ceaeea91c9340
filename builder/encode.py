"""Image encoding for the shards."""

from __future__ import annotations

import io

import numpy as np
import png
from PIL import Image

# zlib level 1: fractal images are mostly zeros, so level 1 is within a few
# percent of level 9 in size at a fraction of the time.
PNG_COMPRESS_LEVEL = 1


def encode_png(image: np.ndarray) -> bytes:
    """uint8 (H, W) grayscale or (H, W, 3) RGB -> PNG bytes (8-bit L or RGB).

    pypng rather than Pillow: Pillow tries every PNG row filter on every row,
    which costs twice the compression itself and, on these sparse images,
    gives larger files than no filter at all (measured in
    benchmarks/render_bench.py)."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    height, width = image.shape[:2]
    greyscale = image.ndim == 2
    writer = png.Writer(width, height, greyscale=greyscale, bitdepth=8, compression=PNG_COMPRESS_LEVEL)
    buffer = io.BytesIO()
    writer.write(buffer, image if greyscale else image.reshape(height, width * 3))
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> uint8 (H, W) or (H, W, 3)."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image)
