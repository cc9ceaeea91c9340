"""Numba kernels: the chaos game and the rasteriser.

Kernels see only arrays and scalars and draw no random numbers themselves:
every random input (the map sequence, the 3x3 mask codes) is drawn outside
with a seeded NumPy generator and passed in, so results are reproducible.
"""

from __future__ import annotations

import numba
import numpy as np

# Points dropped before the first non-finite one, as the released code does
# (a diverging orbit is already far off before it overflows).
NAN_LOOKBACK = 100
PATCH_VALUE = 127


@numba.njit(cache=True, nogil=True)
def chaos_game(maps, map_index):
    """Run the chaos game from (0, 0).

    maps: float64 (N, 6), rows (a, b, c, d, e, f).
    map_index: uint8 (T-1,), the map applied at each step; a value >= N keeps
        the point where it is (the released code's behaviour when no
        cumulative probability reaches the uniform draw).
    Returns xs, ys: float64 (T,), the start point included.
    """
    n_points = map_index.shape[0] + 1
    xs = np.empty(n_points, dtype=np.float64)
    ys = np.empty(n_points, dtype=np.float64)
    x = 0.0
    y = 0.0
    xs[0] = x
    ys[0] = y
    n_maps = maps.shape[0]
    for t in range(n_points - 1):
        k = map_index[t]
        if k < n_maps:
            nx = maps[k, 0] * x + maps[k, 1] * y + maps[k, 4]
            ny = maps[k, 2] * x + maps[k, 3] * y + maps[k, 5]
            x = nx
            y = ny
        xs[t + 1] = x
        ys[t + 1] = y
    return xs, ys


@numba.njit(cache=True, nogil=True)
def count_valid(xs, ys):
    """Number of leading points kept: all of them, or, if some coordinate is
    not finite, those before ``first_bad - NAN_LOOKBACK``."""
    for t in range(xs.shape[0]):
        if not (np.isfinite(xs[t]) and np.isfinite(ys[t])):
            return max(0, t - NAN_LOOKBACK)
    return xs.shape[0]


@numba.njit(cache=True, nogil=True)
def _to_pixels(v, n, size, pad):
    """Per axis, as the released code: shift by -min only if min < 0, then
    ``v / (max - min) * (size - 2 pad) + pad`` truncated to an integer.
    Returns int64 (n,)."""
    lo = v[0]
    hi = v[0]
    for t in range(n):
        if v[t] < lo:
            lo = v[t]
        if v[t] > hi:
            hi = v[t]
    shift = -lo if lo < 0.0 else 0.0
    lo += shift
    hi += shift
    extent = hi - lo
    out = np.empty(n, dtype=np.int64)
    span = float(size - 2 * pad)
    for t in range(n):
        if extent > 0.0:
            out[t] = np.int64((v[t] + shift) / extent * span + float(pad))
        else:
            out[t] = np.int64(float(pad))
    return out


@numba.njit(cache=True, nogil=True)
def rasterize(xs, ys, n_valid, mask_codes, use_mask, size, pad):
    """Draw the first ``n_valid`` points as 3x3 patches, then flip top-bottom.

    xs, ys: float64 (T,). mask_codes: int16 or int32 (>= n_valid,), each in
        [1, 511]: its 9 bits, most significant first, row-major, say which of
        the 9 cells are set to 127 (1) or to 0 (0); the last write wins.
        Ignored (may be empty) when ``use_mask`` is False: every cell is 127.
    A patch's top-left cell is at (x + 1, y + 1); cells past the border are
    clipped. Returns uint8 (size, size), row 0 at the top.
    """
    image = np.zeros((size, size), dtype=np.uint8)
    if n_valid == 0:
        return image
    px = _to_pixels(xs, n_valid, size, pad)
    py = _to_pixels(ys, n_valid, size, pad)
    for t in range(n_valid):
        code = mask_codes[t] if use_mask else 511
        for dy in range(3):
            row = py[t] + 1 + dy
            if row < 0 or row >= size:
                continue
            for dx in range(3):
                col = px[t] + 1 + dx
                if col < 0 or col >= size:
                    continue
                bit = (code >> (8 - (dy * 3 + dx))) & 1
                image[row, col] = PATCH_VALUE if bit else 0
    # The released code draws with y growing downwards and flips at the end.
    return image[::-1].copy()


@numba.njit(cache=True, nogil=True)
def fill_rate(image):
    """Fraction of pixels whose value is > 1. image: uint8 (H, W)."""
    count = 0
    for v in image.ravel():
        if v > 1:
            count += 1
    return count / image.size
