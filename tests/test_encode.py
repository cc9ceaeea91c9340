"""The PNG encoder writes images that standard decoders read back exactly."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from fracbuild import encode


@pytest.mark.parametrize("shape", [(64, 64), (17, 33), (1, 1), (40, 24, 3)])
def test_round_trip_through_pillow(shape):
    image = np.random.default_rng(sum(shape)).integers(0, 256, size=shape, dtype=np.uint8)
    data = encode.encode_png(image)
    with Image.open(io.BytesIO(data)) as decoded:
        decoded.load()
        assert decoded.mode == ("L" if len(shape) == 2 else "RGB")
        assert np.array_equal(np.asarray(decoded), image)
    assert np.array_equal(encode.decode_png(data), image)


def test_chunks_are_well_formed():
    data = encode.encode_png(np.zeros((8, 5), dtype=np.uint8))
    assert data.startswith(encode.PNG_SIGNATURE)
    position, kinds = len(encode.PNG_SIGNATURE), []
    while position < len(data):
        length = int.from_bytes(data[position:position + 4], "big")
        kind, body = data[position + 4:position + 8], data[position + 8:position + 8 + length]
        crc = int.from_bytes(data[position + 8 + length:position + 12 + length], "big")
        assert crc == zlib.crc32(kind + body)
        kinds.append(kind)
        position += 12 + length
    assert kinds == [b"IHDR", b"IDAT", b"IEND"]


def test_encoding_is_deterministic_and_small_on_sparse_images():
    image = np.zeros((512, 512), dtype=np.uint8)
    image[100:200:3, 50:400:2] = 127
    assert encode.encode_png(image) == encode.encode_png(image.copy())
    assert len(encode.encode_png(image)) < 512 * 512 / 20


def test_rejects_other_shapes():
    with pytest.raises(ValueError):
        encode.encode_png(np.zeros((4, 4, 2), dtype=np.uint8))
