"""Numba kernels of the contour data sets (RCDB, VisualAtom): noisy closed
polygons that grow outwards one contour at a time, drawn with 1-pixel lines.

Geometry is computed on the released code's 512 x 512 canvas ("units") and
scaled to the image at drawing time, so a smaller ``--size`` gives the same
picture, smaller. Kernels draw no random numbers: the noise positions and the
grays are drawn outside and passed in.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np

from .perlin import PERMUTATION, noise1

CANVAS_UNITS = 512.0  # the released code's canvas side


@numba.njit(cache=True, nogil=True)
def draw_segment(image, x0, y0, x1, y1, value):
    """Bresenham's 8-connected line from (x0, y0) to (x1, y1), both ends
    included, in column x and row y of uint8 ``image`` (H, W). Pixels outside
    the image are skipped (never wrapped); a segment entirely beyond one side
    is skipped at once."""
    height, width = image.shape
    if (x0 < 0 and x1 < 0) or (y0 < 0 and y1 < 0) or (x0 >= width and x1 >= width) \
            or (y0 >= height and y1 >= height):
        return
    dx = abs(x1 - x0)
    dy = -abs(y1 - y0)
    sx = 1 if x0 < x1 else -1
    sy = 1 if y0 < y1 else -1
    error = dx + dy
    x = x0
    y = y0
    while True:
        if 0 <= x < width and 0 <= y < height:
            image[y, x] = value
        if x == x1 and y == y1:
            return
        twice = 2 * error
        if twice >= dy:
            error += dy
            x += sx
        if twice <= dx:
            error += dx
            y += sy


@numba.njit(cache=True, nogil=True)
def draw_polygon(image, px, py, value):
    """The closed polygon through integer vertices px, py: int64 (K,)."""
    count = px.shape[0]
    for k in range(count):
        j = k + 1 if k + 1 < count else 0
        draw_segment(image, px[k], py[k], px[j], py[j], value)


@numba.njit(cache=True, nogil=True)
def grow_contours(image, x, y, cos_t, sin_t, wave_1, wave_2, draw_x, draw_y, scale, origin, grays, noise_u,
                  amplitude, noise_factor, drift, permutation):
    """Grow and draw ``L`` contours into ``image`` (uint8 (H, W), modified).

    x, y: float64 (K,) vertex positions in units (modified: they end at the
        last contour); RCDB keeps them relative to the centre, VisualAtom
        includes the centre from the start.
    cos_t, sin_t: float64 (K,) the cosine and sine of each vertex's angle.
    wave_1, wave_2: float64 (K,) per-vertex terms subtracted from the noise
        (VisualAtom's two sinusoids; zeros for RCDB).
    draw_x, draw_y: added to a position when it is drawn (RCDB's centre;
        0 for VisualAtom). scale: pixels per unit.
    origin: pixels added to both coordinates after truncation (0 normally).
    grays: uint8 (L,), the gray of each contour. noise_u: float64 (L, 2, K),
        the Perlin positions of each contour's x and y noise per vertex.
    Per contour and vertex, with the released code's order of float
    operations (each one rounds, and the last bit shows after truncation):
    ``n = (((P(u) * amplitude) * noise_factor - amplitude) - wave_1[k]) - wave_2[k]``
    on each axis, then ``x[k] -= cos_t[k] * (n_x - drift)`` and likewise y;
    the polygon is drawn after the move. A vertex lands on pixel
    ``trunc((x + draw_x) * scale) + origin``: truncation toward zero, as
    Pillow converts line end points (so -0.7 lands on 0).
    """
    count = x.shape[0]
    px = np.empty(count, dtype=np.int64)
    py = np.empty(count, dtype=np.int64)
    for contour in range(noise_u.shape[0]):
        for k in range(count):
            nx = (((noise1(noise_u[contour, 0, k], permutation) * amplitude) * noise_factor - amplitude)
                  - wave_1[k]) - wave_2[k]
            ny = (((noise1(noise_u[contour, 1, k], permutation) * amplitude) * noise_factor - amplitude)
                  - wave_1[k]) - wave_2[k]
            x[k] -= cos_t[k] * (nx - drift)
            y[k] -= sin_t[k] * (ny - drift)
            px[k] = np.int64((x[k] + draw_x) * scale) + origin
            py[k] = np.int64((y[k] + draw_y) * scale) + origin
        draw_polygon(image, px, py, grays[contour])


@functools.lru_cache(maxsize=64)
def _angles(count: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    step = (2.0 * math.pi) / count
    angles = [step * k for k in range(count)]
    return tuple(math.cos(t) for t in angles), tuple(math.sin(t) for t in angles)


def vertex_angles(count: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of ``(2 pi / count) * k`` for k in 0..count-1, float64 (K,)
    each. The angle is formed in that order and evaluated by the C library
    (``math``), as the released code does: ``2 pi k / count`` can differ in
    the last bit, which decides the pixel of an axis vertex. Cached per
    count (a category's instances share it), returned as fresh arrays."""
    cos_t, sin_t = _angles(count)
    return np.array(cos_t, dtype=np.float64), np.array(sin_t, dtype=np.float64)


@functools.lru_cache(maxsize=64)
def _sinusoid(count: int, frequency: int) -> tuple[float, ...]:
    step = (2.0 * math.pi) / count
    return tuple(0.5 * math.sin((step * k) * frequency) for k in range(count))


def sinusoid(count: int, frequency: int) -> np.ndarray:
    """``0.5 sin(((2 pi / count) * k) * frequency)`` for k in 0..count-1,
    float64 (K,), the products in the released code's order (cached like
    :func:`vertex_angles`)."""
    return np.array(_sinusoid(count, frequency), dtype=np.float64)


def render_contours(size: int, background: int, radius: float, oval_x: float, oval_y: float,
                    centre: tuple[float, float], grays: np.ndarray, noise_u: np.ndarray, amplitude: float,
                    drift: float, *, noise_factor: float = 2.0, frequencies: tuple[int, ...] = (),
                    centre_in_positions: bool = False, canvas: int | None = None, origin: int = 0) -> np.ndarray:
    """One contour image: K vertices start on the oval
    ``((cos t * r) * ox, (sin t * r) * oy)`` around ``centre`` (x, y) and
    grow through ``len(grays)`` contours.

    grays: uint8 (L,); noise_u: float64 (L, 2, K) (see :func:`grow_contours`).
    noise_factor: 2 for RCDB (``n = 2 c P - c``), 1 for VisualAtom.
    frequencies: at most two sinusoid frequencies subtracted from the noise
    (VisualAtom). centre_in_positions: the positions include the centre from
    the start (VisualAtom) instead of getting it added when drawn (RCDB).
    ``canvas``/``origin`` draw into a larger canvas shifted by ``origin``
    pixels (tests use this to check clipping). Returns uint8 (canvas, canvas).
    """
    count = noise_u.shape[2]
    if len(frequencies) > 2:
        raise ValueError(f"at most two sinusoid frequencies, got {len(frequencies)}")
    cos_t, sin_t = vertex_angles(count)
    x = (cos_t * float(radius)) * float(oval_x)
    y = (sin_t * float(radius)) * float(oval_y)
    centre_x, centre_y = float(centre[0]), float(centre[1])
    if centre_in_positions:
        x = x + centre_x
        y = y + centre_y
        draw_x = draw_y = 0.0
    else:
        draw_x, draw_y = centre_x, centre_y
    waves = [sinusoid(count, n) for n in frequencies] + [np.zeros(count)] * (2 - len(frequencies))
    side = size if canvas is None else canvas
    image = np.full((side, side), background, dtype=np.uint8)
    grow_contours(image, x, y, cos_t, sin_t, waves[0], waves[1], draw_x, draw_y, size / CANVAS_UNITS, origin,
                  np.ascontiguousarray(grays, dtype=np.uint8), np.ascontiguousarray(noise_u, dtype=np.float64),
                  float(amplitude), float(noise_factor), float(drift), PERMUTATION)
    return image
