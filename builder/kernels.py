"""Numba kernels: the chaos game and the rasteriser.

Kernels see only arrays and scalars and draw no random numbers themselves:
every random input (the map sequence, the 3x3 mask codes) is drawn outside
with a seeded NumPy generator and passed in, so results are reproducible.
"""

from __future__ import annotations

import numba
import numpy as np

# A diverging orbit is cut as the released code cuts it (its rescale step):
# the first NaN in x (if x has none, in y) goes, with the NAN_LOOKBACK points
# before it and every other NaN of that axis; +-inf points that are not NaN
# stay. An orbit usually turns NaN 1-3 steps after its first inf, so the few
# huge points before it stay and set the bounding box.
NAN_LOOKBACK = 100
PATCH_VALUE = 127


@numba.njit(cache=True, nogil=True)
def chaos_game_tracked(maps, map_index):
    """Run the chaos game from (0, 0), tracking what the rasteriser needs.

    maps: float64 (N, 6), rows (a, b, c, d, e, f).
    map_index: uint8 (T-1,), the map applied at each step; a value >= N keeps
        the point where it is (the released code's behaviour when no
        cumulative probability reaches the uniform draw).
    Returns xs, ys: float64 (T,) the orbit, the start point included, or,
    when it turns NaN, the points :func:`released_cut` keeps (fewer, maybe
    none); n_valid: their number (len(xs)); bounds: float64 (4,) =
    (x_min, x_max, y_min, y_max) over them, +-inf included. Tracking the
    bounds here is off the orbit's dependency chain, so it costs almost
    nothing and saves the rasteriser two passes over the points.
    """
    n_points = map_index.shape[0] + 1
    xs = np.empty(n_points, dtype=np.float64)
    ys = np.empty(n_points, dtype=np.float64)
    x = 0.0
    y = 0.0
    xs[0] = x
    ys[0] = y
    x_lo = x_hi = y_lo = y_hi = 0.0
    saw_nan = False
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
        x_lo = min(x_lo, x)
        x_hi = max(x_hi, x)
        y_lo = min(y_lo, y)
        y_hi = max(y_hi, y)
        if np.isnan(x) or np.isnan(y):
            saw_nan = True
            if np.isnan(x):
                # x stays NaN from here on (every map multiplies it), and the
                # cut drops every point from NAN_LOOKBACK before it: the rest
                # of the orbit cannot change the result.
                xs[t + 2:] = np.nan
                ys[t + 2:] = np.nan
                break
    bounds = np.empty(4, dtype=np.float64)
    if saw_nan:  # rare: the kept points and their bounds
        xs, ys = released_cut(xs, ys)
        _prefix_bounds(xs, ys, xs.shape[0], bounds)
    else:
        bounds[0], bounds[1], bounds[2], bounds[3] = x_lo, x_hi, y_lo, y_hi
    return xs, ys, xs.shape[0], bounds


@numba.njit(cache=True, nogil=True)
def chaos_game(maps, map_index):
    """The chaos game alone: xs, ys float64 (n_valid,), the points kept
    (see :func:`chaos_game_tracked`)."""
    xs, ys, _, _ = chaos_game_tracked(maps, map_index)
    return xs, ys


@numba.njit(cache=True, nogil=True)
def _drop_before_first_nan(a, b):
    """One axis of the released cut: if ``a`` has a NaN, the first one at
    index f, drop positions f - NAN_LOOKBACK .. f - 1 and every NaN of ``a``
    from both ``a`` and ``b`` (float64 (n,)); else return them as they are.
    With f <= NAN_LOOKBACK nothing is kept: the released code fails there
    (it deletes negative indices); an empty image is drawn instead."""
    n = a.shape[0]
    first = -1
    for t in range(n):
        if np.isnan(a[t]):
            first = t
            break
    if first < 0:
        return a, b
    keep_a = np.empty(n, dtype=np.float64)
    keep_b = np.empty(n, dtype=np.float64)
    kept = 0
    if first > NAN_LOOKBACK:
        for t in range(n):
            if first - NAN_LOOKBACK <= t < first or np.isnan(a[t]):
                continue
            keep_a[kept] = a[t]
            keep_b[kept] = b[t]
            kept += 1
    return keep_a[:kept].copy(), keep_b[:kept].copy()


@numba.njit(cache=True, nogil=True)
def released_cut(xs, ys):
    """The points of an orbit the released code keeps: the cut on x, then
    the same cut on the y of the points left. float64 (T,) each ->
    float64 (n,) each, n <= T (the inputs themselves when nothing is NaN)."""
    xs, ys = _drop_before_first_nan(xs, ys)
    ys, xs = _drop_before_first_nan(ys, xs)
    return xs, ys


@numba.njit(cache=True, nogil=True)
def _prefix_bounds(xs, ys, n, bounds):
    """Write (x_min, x_max, y_min, y_max) of the first n points into bounds."""
    if n == 0:
        bounds[:] = 0.0
        return
    x_lo = x_hi = xs[0]
    y_lo = y_hi = ys[0]
    for t in range(n):
        x_lo = min(x_lo, xs[t])
        x_hi = max(x_hi, xs[t])
        y_lo = min(y_lo, ys[t])
        y_hi = max(y_hi, ys[t])
    bounds[0], bounds[1], bounds[2], bounds[3] = x_lo, x_hi, y_lo, y_hi


@numba.njit(cache=True, nogil=True, inline="always")
def axis_transform(lo, hi, size, pad):
    """The released code's per-axis mapping, as (shift, extent, span):
    shift by -min only if min < 0, extent = max - min (both after the
    shift, so NaN when min is -inf), span = size - 2 pad; a value lands on
    :func:`pixel`."""
    shift = -lo if lo < 0.0 else 0.0
    return shift, (hi + shift) - (lo + shift), float(size - 2 * pad)


@numba.njit(cache=True, nogil=True, inline="always")
def pixel(v, shift, extent, span, pad):
    """``int((v + shift) / extent * span + pad)``, where a NaN or infinite
    result (an inf point, an infinite or zero extent) gives 0, as the
    released code's cast to uint16 does."""
    p = (v + shift) / extent * span + float(pad)
    if np.isfinite(p):
        return np.int64(p)
    return np.int64(0)


def _patch_table():
    """Cell values of every 3x3 mask code: uint8 (512, 9), row-major cells,
    bit 8 (most significant) first; a 1 bit is PATCH_VALUE, a 0 bit is 0."""
    codes = np.arange(512)[:, None]
    bits = (codes >> (8 - np.arange(9))[None, :]) & 1
    return (bits * PATCH_VALUE).astype(np.uint8)


PATCH_TABLE = _patch_table()


@numba.njit(cache=True, nogil=True)
def rasterize(xs, ys, n_valid, mask_codes, use_mask, size, pad):
    """Draw the first ``n_valid`` points as 3x3 patches, flipped top-bottom.

    xs, ys: float64 (T,). mask_codes: int16 (>= n_valid,), each in [1, 511]:
        its 9 bits, most significant first, row-major, say which of the 9
        cells are set to 127 (1) or to 0 (0); the last write wins. Ignored
        (may be empty) when ``use_mask`` is False: every cell is 127.
    A patch's top-left cell is at (x + 1, y + 1) with y growing downwards;
    cells past the border are clipped. The image is flipped top to bottom at
    the end, as the released code does (done here by writing row y to
    ``size - 1 - y``). Returns uint8 (size, size).
    """
    bounds = np.empty(4, dtype=np.float64)
    _prefix_bounds(xs, ys, n_valid, bounds)
    return rasterize_bounded(xs, ys, n_valid, bounds, mask_codes, use_mask, size, pad)


@numba.njit(cache=True, nogil=True)
def rasterize_bounded(xs, ys, n_valid, bounds, mask_codes, use_mask, size, pad):
    """:func:`rasterize` with the bounds (x_min, x_max, y_min, y_max) of the
    first ``n_valid`` points already known (from :func:`chaos_game_tracked`)."""
    image = np.zeros((size, size), dtype=np.uint8)
    if n_valid == 0:
        return image
    x_shift, x_extent, span = axis_transform(bounds[0], bounds[1], size, pad)
    y_shift, y_extent, _ = axis_transform(bounds[2], bounds[3], size, pad)
    table = PATCH_TABLE
    for t in range(n_valid):
        cells = table[mask_codes[t] if use_mask else 511]
        x0 = pixel(xs[t], x_shift, x_extent, span, pad) + 1
        y0 = pixel(ys[t], y_shift, y_extent, span, pad) + 1
        if 0 <= x0 and x0 + 3 <= size and 0 <= y0 and y0 + 3 <= size:
            for dy in range(3):  # fast path: the whole patch is inside
                row = size - 1 - (y0 + dy)
                image[row, x0] = cells[3 * dy]
                image[row, x0 + 1] = cells[3 * dy + 1]
                image[row, x0 + 2] = cells[3 * dy + 2]
            continue
        for dy in range(3):
            y = y0 + dy
            if y < 0 or y >= size:
                continue
            for dx in range(3):
                x = x0 + dx
                if 0 <= x < size:
                    image[size - 1 - y, x] = cells[3 * dy + dx]
    return image


@numba.njit(cache=True, nogil=True)
def fill_rate(image):
    """Fraction of pixels whose value is > 1. image: uint8 (H, W)."""
    count = 0
    for v in image.ravel():
        if v > 1:
            count += 1
    return count / image.size
