"""Image encoding for the shards: 8-bit PNG, fast.

The PNG container (signature, IHDR, one IDAT, IEND) is written here; the
compression is ISA-L's deflate (python-isal), which produces standard zlib
streams. Measured on these sparse fractal images (benchmarks/RESULTS.md):
Pillow spends ~3 ms per 512x512 image trying every row filter on every
row; zlib level 1 without filters ~1.3 ms; ISA-L level 1 ~0.2 ms, and its
files are also the smallest of the three. Decoding uses Pillow.
"""

from __future__ import annotations

import io
import struct

import numpy as np
from isal import isal_zlib
from PIL import Image

COMPRESS_LEVEL = 1  # ISA-L levels are 0..3; 1 is as small as 2 here and faster
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPE = {1: 0, 3: 2}  # channels -> PNG colour type (0 grayscale, 2 RGB)


def _chunk(kind: bytes, data: bytes) -> bytes:
    checksum = isal_zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", checksum)


def encode_png(image: np.ndarray) -> bytes:
    """uint8 (H, W) grayscale or (H, W, 3) RGB -> PNG bytes (8-bit L or RGB).

    Every row uses filter 0 (none): on mostly-black images the other
    filters only cost time."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    height, width = image.shape[:2]
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels not in _COLOR_TYPE:
        raise ValueError(f"cannot encode an image of shape {image.shape} as PNG")
    rows = np.zeros((height, 1 + width * channels), dtype=np.uint8)  # column 0: the filter byte
    rows[:, 1:] = image.reshape(height, width * channels)
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOR_TYPE[channels], 0, 0, 0)
    compressed = isal_zlib.compress(rows.tobytes(), COMPRESS_LEVEL)
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", compressed) + _chunk(b"IEND", b"")


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> uint8 (H, W) or (H, W, 3)."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image)
