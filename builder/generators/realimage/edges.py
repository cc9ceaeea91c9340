"""A small Canny edge detector in numba (so the builder needs no
scikit-image): Gaussian smoothing, Sobel gradients, non-maximum suppression,
double threshold and hysteresis."""

from __future__ import annotations

import math

import numba
import numpy as np

EDGE_VALUE = 255
TRUNCATE = 4.0  # the Gaussian kernel reaches out to 4 sigma


def gaussian_kernel(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian, radius ceil(4 sigma). float64 (2r + 1,)."""
    radius = max(1, int(math.ceil(TRUNCATE * sigma)))
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


@numba.njit(cache=True, nogil=True)
def _convolve_rows(padded, kernel, width):
    """Each row of ``padded`` (H, width + 2r) convolved with ``kernel`` (2r + 1,),
    valid part only. float64 (H, width)."""
    out = np.zeros((padded.shape[0], width))
    for i in range(padded.shape[0]):
        for k in range(kernel.shape[0]):  # tap-major: the loop over j vectorises
            weight = kernel[k]
            for j in range(width):
                out[i, j] += weight * padded[i, j + k]
    return out


def smooth(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable convolution of float64 (H, W) with ``kernel`` along both
    axes, edges mirrored (``... 1 0 | 0 1 ... | n-1 n-2 ...``). float64 (H, W)."""
    radius = kernel.shape[0] // 2
    height, width = image.shape
    rows = _convolve_rows(np.pad(image, ((0, 0), (radius, radius)), mode="symmetric"), kernel, width)
    columns = _convolve_rows(np.ascontiguousarray(np.pad(rows, ((radius, radius), (0, 0)), mode="symmetric").T),
                             kernel, height)
    return np.ascontiguousarray(columns.T)


@numba.njit(cache=True, nogil=True)
def canny_kernel(smoothed, low_fraction, high_fraction):
    """Edges of a smoothed float64 (H, W) image: uint8 (H, W), EDGE_VALUE on
    edges. Thresholds are fractions of the largest gradient magnitude; the
    one-pixel border is never an edge."""
    height, width = smoothed.shape
    gx = np.zeros((height, width))
    gy = np.zeros((height, width))
    magnitude = np.zeros((height, width))
    peak = 0.0
    for i in range(1, height - 1):
        for j in range(1, width - 1):
            x = (smoothed[i - 1, j + 1] + 2.0 * smoothed[i, j + 1] + smoothed[i + 1, j + 1]
                 - smoothed[i - 1, j - 1] - 2.0 * smoothed[i, j - 1] - smoothed[i + 1, j - 1])
            y = (smoothed[i + 1, j - 1] + 2.0 * smoothed[i + 1, j] + smoothed[i + 1, j + 1]
                 - smoothed[i - 1, j - 1] - 2.0 * smoothed[i - 1, j] - smoothed[i - 1, j + 1])
            gx[i, j] = x
            gy[i, j] = y
            magnitude[i, j] = math.sqrt(x * x + y * y)
            peak = max(peak, magnitude[i, j])
    edges = np.zeros((height, width), dtype=np.uint8)
    if peak == 0.0:
        return edges
    low = low_fraction * peak
    high = high_fraction * peak
    tan_22 = 0.41421356237309503  # tan(pi / 8)
    # 0 none, 1 weak, 2 strong: local maxima along the gradient above a threshold.
    state = np.zeros((height, width), dtype=np.uint8)
    for i in range(1, height - 1):
        for j in range(1, width - 1):
            m = magnitude[i, j]
            if m < low:
                continue
            ax = abs(gx[i, j])
            ay = abs(gy[i, j])
            if ay <= tan_22 * ax:  # gradient along x: compare left and right
                di, dj = 0, 1
            elif ax <= tan_22 * ay:  # along y
                di, dj = 1, 0
            elif gx[i, j] * gy[i, j] > 0:  # down-right diagonal
                di, dj = 1, 1
            else:
                di, dj = 1, -1
            if m >= magnitude[i + di, j + dj] and m >= magnitude[i - di, j - dj]:
                state[i, j] = 2 if m >= high else 1
    # Hysteresis: keep weak pixels 8-connected to a strong one.
    stack = np.empty(height * width, dtype=np.int64)
    for i in range(height):
        for j in range(width):
            if state[i, j] != 2 or edges[i, j]:
                continue
            edges[i, j] = EDGE_VALUE
            top = 0
            stack[top] = i * width + j
            top += 1
            while top > 0:
                top -= 1
                ci, cj = divmod(stack[top], width)
                for ni in range(ci - 1, ci + 2):
                    for nj in range(cj - 1, cj + 2):
                        if state[ni, nj] != 0 and edges[ni, nj] == 0:
                            edges[ni, nj] = EDGE_VALUE
                            stack[top] = ni * width + nj
                            top += 1
    return edges


# The real-image kind's defaults (its --canny-* options take them from here).
SIGMA, LOW, HIGH = 2.0, 0.1, 0.2


def canny(image: np.ndarray, sigma: float = SIGMA, low: float = LOW, high: float = HIGH) -> np.ndarray:
    """Canny edges of uint8 (H, W) ``image``: uint8 (H, W), 255 on edges, 0
    elsewhere. ``low``/``high``: hysteresis thresholds as fractions of the
    largest gradient magnitude."""
    smoothed = smooth(np.ascontiguousarray(image, dtype=np.float64), gaussian_kernel(sigma))
    return canny_kernel(smoothed, float(low), float(high))
