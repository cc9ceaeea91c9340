"""Geometric warps of one image, for the real-image kind.

Coordinates are normalised: pixel centre j of W maps to ``u = (2 j + 1) / W - 1``
(so the image spans [-1, 1] on both axes, y downwards). A warp gives, for
every output pixel (u, v), the source point it samples, bilinearly; a point
outside the image takes the nearest edge's value. Warps:

* affine: ``(sx, sy) = M (u, v, 1)``, M 2x3 = identity + epsilon.
* polynomial: ``sx = u + e0 u^2 + e1 u v + e2 v^2``, ``sy = v + e3 u^2 + e4 u v + e5 v^2``
  (the second-order coefficients of an identity quadratic map are epsilon).
* elastic: ``(sx, sy) = (u, v) + d(u, v)``, d a cubic B-spline field through a
  G x G grid of control displacements (epsilon) spread evenly over [-1, 1].
"""

from __future__ import annotations

import numba
import numpy as np

WARPS = ("affine", "polynomial", "elastic")
COORDINATES = ("normalised: pixel centre j of W is u = (2 j + 1) / W - 1, y downwards; an output pixel (u, v) "
               "samples the source point below bilinearly, a point outside the image takes the nearest edge's value")
WARP_DOC = {
    "affine": "(sx, sy) = M (u, v, 1), M = [[1, 0, 0], [0, 1, 0]] + epsilon (2 x 3)",
    "polynomial": "sx = u + e00 u^2 + e01 u v + e02 v^2, sy = v + e10 u^2 + e11 u v + e12 v^2, e = epsilon (2 x 3)",
    "elastic": "(sx, sy) = (u, v) + d(u, v), d the cubic B-spline field through a G x G grid of control "
               "displacements evenly spread over [-1, 1]: epsilon row 0 (x) and row 1 (y), each G*G row-major "
               "(y knot, x knot)",
}


def grid(size: int) -> np.ndarray:
    """Normalised pixel-centre coordinates of one axis. float64 (size,)."""
    return (2.0 * np.arange(size) + 1.0) / size - 1.0


def epsilon_shape(warp: str, elastic_grid: int) -> tuple[int, int]:
    return (2, elastic_grid * elastic_grid) if warp == "elastic" else (2, 3)


def _bspline(t: np.ndarray) -> np.ndarray:
    """The cubic B-spline, support [-2, 2]."""
    t = np.abs(t)
    return np.where(t < 1.0, 2.0 / 3.0 - t * t + 0.5 * t ** 3, np.where(t < 2.0, (2.0 - t) ** 3 / 6.0, 0.0))


def elastic_basis(size: int, control: int) -> np.ndarray:
    """Weights of ``control`` evenly spaced B-spline knots at each pixel
    centre. float64 (control, size)."""
    knots = np.linspace(-1.0, 1.0, control)
    spacing = 2.0 / (control - 1)
    return _bspline((grid(size)[None, :] - knots[:, None]) / spacing)


def source_points(warp: str, epsilon: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Where each output pixel samples, normalised: (sx, sy), float64 (size, size) each."""
    u = grid(size)[None, :]
    v = grid(size)[:, None]
    if warp == "affine":
        m = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]) + epsilon
        return m[0, 0] * u + m[0, 1] * v + m[0, 2], m[1, 0] * u + m[1, 1] * v + m[1, 2]
    if warp == "polynomial":
        e = epsilon
        return (u + e[0, 0] * u * u + e[0, 1] * u * v + e[0, 2] * v * v,
                v + e[1, 0] * u * u + e[1, 1] * u * v + e[1, 2] * v * v)
    if warp == "elastic":
        control = int(round(np.sqrt(epsilon.shape[1])))
        basis = elastic_basis(size, control)  # (G, size)
        dx = basis.T @ epsilon[0].reshape(control, control) @ basis  # rows: y knots, columns: x knots
        dy = basis.T @ epsilon[1].reshape(control, control) @ basis
        return u + dx, v + dy
    raise ValueError(f"unknown warp {warp!r}")


@numba.njit(cache=True, nogil=True)
def sample_bilinear(image, px, py):
    """Bilinear samples of float64 ``image`` (H, W, C) at pixel coordinates
    px, py (float64 (h, w)), each clamped into the image first (a point
    outside takes the nearest edge's value: no black frame, whose border
    would turn into an edge). Returns float64 (h, w, C)."""
    height, width, channels = image.shape
    out = np.empty((px.shape[0], px.shape[1], channels))
    for i in range(px.shape[0]):
        for j in range(px.shape[1]):
            x = min(max(px[i, j], 0.0), width - 1.0)
            y = min(max(py[i, j], 0.0), height - 1.0)
            x0 = min(int(np.floor(x)), width - 1)
            y0 = min(int(np.floor(y)), height - 1)
            x1 = min(x0 + 1, width - 1)
            y1 = min(y0 + 1, height - 1)
            fx = x - x0
            fy = y - y0
            for c in range(channels):
                top = image[y0, x0, c] + fx * (image[y0, x1, c] - image[y0, x0, c])
                bottom = image[y1, x0, c] + fx * (image[y1, x1, c] - image[y1, x0, c])
                out[i, j, c] = top + fy * (bottom - top)
    return out


def warp_image(image: np.ndarray, warp: str, epsilon: np.ndarray) -> np.ndarray:
    """Warp uint8 (S, S) or (S, S, 3) ``image``; returns the same shape and dtype
    (bilinear values rounded). Identity parameters give the image back exactly."""
    size = image.shape[0]
    sx, sy = source_points(warp, np.asarray(epsilon, dtype=np.float64), size)
    px = ((sx + 1.0) * size - 1.0) / 2.0
    py = ((sy + 1.0) * size - 1.0) / 2.0
    stacked = image.reshape(size, size, -1).astype(np.float64)
    out = sample_bilinear(stacked, np.ascontiguousarray(px), np.ascontiguousarray(py))
    return np.rint(np.clip(out, 0.0, 255.0)).astype(np.uint8).reshape(image.shape)
