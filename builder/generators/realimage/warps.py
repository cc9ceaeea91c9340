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


def quadratic_coefficients(warp: str, epsilon: np.ndarray) -> np.ndarray:
    """The warp as ``s = c0 + c1 u + c2 v + c3 u^2 + c4 u v + c5 v^2`` per axis
    (rows x, y), before any elastic displacement. float64 (2, 6)."""
    coefficients = np.array([[0.0, 1.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0, 0.0, 0.0]])
    if warp == "affine":  # M = identity + epsilon, columns (u, v, 1)
        coefficients[:, 1:3] += epsilon[:, 0:2]
        coefficients[:, 0] += epsilon[:, 2]
    elif warp == "polynomial":
        coefficients[:, 3:6] += epsilon
    elif warp != "elastic":
        raise ValueError(f"unknown warp {warp!r}")
    return coefficients


def displacement_factors(epsilon: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The elastic displacement ``d[i, j] = sum_b rows[i, b] basis[b, j]`` in
    factored form: rows float64 (2, size, G) (per axis, the knot rows already
    weighted by the y basis), basis float64 (G, size)."""
    control = int(round(np.sqrt(epsilon.shape[1])))
    basis = elastic_basis(size, control)
    rows = np.stack([basis.T @ epsilon[a].reshape(control, control) for a in range(2)])  # (y knot, x knot)
    return np.ascontiguousarray(rows), np.ascontiguousarray(basis)


@numba.njit(cache=True, nogil=True)
def warp_kernel(image, coefficients, rows, basis, use_displacement):
    """Sample uint8 ``image`` (S, S, C) at each output pixel's source point
    (see :func:`quadratic_coefficients`, plus the elastic displacement from
    :func:`displacement_factors` when ``use_displacement``), bilinearly, the
    source point clamped into the image first (a point outside takes the
    nearest edge's value: no black frame, whose border would become an
    edge). Rounds half up to uint8 (S, S, C)."""
    size = image.shape[0]
    channels = image.shape[2]
    out = np.empty_like(image)
    last = size - 1.0
    grid_ = np.empty(size)
    for j in range(size):
        grid_[j] = (2.0 * j + 1.0) / size - 1.0
    cx = coefficients[0]
    cy = coefficients[1]
    for i in range(size):
        v = grid_[i]
        for j in range(size):
            u = grid_[j]
            sx = cx[0] + cx[1] * u + cx[2] * v + cx[3] * u * u + cx[4] * u * v + cx[5] * v * v
            sy = cy[0] + cy[1] * u + cy[2] * v + cy[3] * u * u + cy[4] * u * v + cy[5] * v * v
            if use_displacement:
                for b in range(basis.shape[0]):
                    sx += rows[0, i, b] * basis[b, j]
                    sy += rows[1, i, b] * basis[b, j]
            x = min(max(((sx + 1.0) * size - 1.0) * 0.5, 0.0), last)
            y = min(max(((sy + 1.0) * size - 1.0) * 0.5, 0.0), last)
            x0 = min(int(x), size - 1)
            y0 = min(int(y), size - 1)
            x1 = min(x0 + 1, size - 1)
            y1 = min(y0 + 1, size - 1)
            fx = x - x0
            fy = y - y0
            for c in range(channels):
                top = image[y0, x0, c] + fx * (float(image[y0, x1, c]) - image[y0, x0, c])
                bottom = image[y1, x0, c] + fx * (float(image[y1, x1, c]) - image[y1, x0, c])
                out[i, j, c] = np.uint8(min(np.floor(top + fy * (bottom - top) + 0.5), 255.0))
    return out


_NO_FIELD = (np.zeros((2, 1, 1)), np.zeros((1, 1)))


def warp_image(image: np.ndarray, warp: str, epsilon: np.ndarray) -> np.ndarray:
    """Warp uint8 (S, S) or (S, S, 3) ``image``; returns the same shape and dtype
    (bilinear values rounded half up). Identity parameters give the image back
    exactly."""
    size = image.shape[0]
    epsilon = np.asarray(epsilon, dtype=np.float64)
    rows, basis = displacement_factors(epsilon, size) if warp == "elastic" else _NO_FIELD
    stacked = np.ascontiguousarray(image.reshape(size, size, -1))
    return warp_kernel(stacked, quadratic_coefficients(warp, epsilon), rows, basis,
                       warp == "elastic").reshape(image.shape)
