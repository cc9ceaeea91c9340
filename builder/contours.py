"""Numba kernels of the contour data sets (RCDB, VisualAtom): noisy closed
polygons that grow outwards one contour at a time, drawn with 1-pixel lines.

Geometry is computed on the released code's 512 x 512 canvas ("units") and
scaled to the image at drawing time, so a smaller ``--size`` gives the same
picture, smaller. Kernels draw no random numbers: the noise positions and the
grays are drawn outside and passed in.
"""

from __future__ import annotations

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
def grow_contours(image, x, y, cos_t, sin_t, centre_x, centre_y, scale, origin, grays, noise_u,
                  amplitude, offset, drift, permutation):
    """Grow and draw ``L`` contours into ``image`` (uint8 (H, W), modified).

    x, y: float64 (K,) vertex positions relative to the centre, in units
        (modified: they end at the last contour).
    cos_t, sin_t: float64 (K,) the cosine and sine of each vertex's angle.
    centre_x, centre_y: the centre, in units. scale: pixels per unit.
    origin: pixels added to both coordinates after scaling (0 normally).
    grays: uint8 (L,), the gray of each contour. noise_u: float64 (L, 2, K),
        the Perlin positions of each contour's x and y noise per vertex.
    amplitude, offset (float64 (K,)), drift: per contour and vertex,
        ``n = amplitude * P(u) + offset[k]`` on each axis, then
        ``x[k] -= cos_t[k] * (n_x - drift)`` and ``y[k] -= sin_t[k] * (n_y - drift)``;
        the polygon is drawn after the move. A vertex lands on pixel
        ``floor((centre + position) * scale + 0.5) + origin``.
    """
    count = x.shape[0]
    px = np.empty(count, dtype=np.int64)
    py = np.empty(count, dtype=np.int64)
    for contour in range(noise_u.shape[0]):
        for k in range(count):
            nx = amplitude * noise1(noise_u[contour, 0, k], permutation) + offset[k]
            ny = amplitude * noise1(noise_u[contour, 1, k], permutation) + offset[k]
            x[k] -= cos_t[k] * (nx - drift)
            y[k] -= sin_t[k] * (ny - drift)
            px[k] = np.int64(np.floor((centre_x + x[k]) * scale + 0.5)) + origin
            py[k] = np.int64(np.floor((centre_y + y[k]) * scale + 0.5)) + origin
        draw_polygon(image, px, py, grays[contour])


def vertex_angles(count: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of ``2 pi k / count`` for k in 0..count-1. float64 (K,) each."""
    theta = 2.0 * np.pi * np.arange(count) / count
    return np.cos(theta), np.sin(theta)


def render_contours(size: int, background: int, radius: float, oval_x: float, oval_y: float,
                    centre: tuple[float, float], grays: np.ndarray, noise_u: np.ndarray, amplitude: float,
                    offset: np.ndarray, drift: float, canvas: int | None = None, origin: int = 0) -> np.ndarray:
    """One contour image: K vertices start on the oval ``(cos t r ox, sin t r oy)``
    around ``centre`` and grow through ``len(grays)`` contours.

    noise_u: float64 (L, 2, K); offset: float64 (K,) (see :func:`grow_contours`).
    ``canvas``/``origin`` draw into a larger canvas shifted by ``origin``
    pixels (tests use this to check clipping). Returns uint8 (canvas, canvas).
    """
    count = noise_u.shape[2]
    cos_t, sin_t = vertex_angles(count)
    x = cos_t * (radius * oval_x)
    y = sin_t * (radius * oval_y)
    side = size if canvas is None else canvas
    image = np.full((side, side), background, dtype=np.uint8)
    grow_contours(image, x, y, cos_t, sin_t, float(centre[0]), float(centre[1]), size / CANVAS_UNITS, origin,
                  np.ascontiguousarray(grays, dtype=np.uint8), np.ascontiguousarray(noise_u, dtype=np.float64),
                  float(amplitude), np.ascontiguousarray(offset, dtype=np.float64), float(drift), PERMUTATION)
    return image
