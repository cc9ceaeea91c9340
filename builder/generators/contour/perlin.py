"""One-octave 1-D Perlin noise, as the contour data sets (RCDB, VisualAtom)
use it through the ``noise`` package's ``pnoise1(u)``.

Lattice point ``i = floor(u) mod 256`` gets the gradient ``g = (h & 7) + 1``
with ``h = PERMUTATION[i]``, or ``g = -1`` when ``h & 8`` (that package's
gradient rule: an asymmetric set, not the textbook ``+-g``). Between lattice
points the two ramps ``g_i * f`` and ``g_{i+1} * (f - 1)`` are blended with
the fade ``6f^5 - 15f^4 + 10f^3`` and the result is multiplied by 0.4, so
values lie within +-0.9521.

Computed as that package computes it, in single precision: the argument is
rounded to float32 on entry and every step is one float32 operation (no
fused multiply-add). The positions the data sets use reach 10,000, where a
float32 is 0.001 apart, so a float64 evaluation draws visibly different
contours.
"""

from __future__ import annotations

import numba
import numpy as np

# Ken Perlin's reference permutation of 0..255.
PERMUTATION = np.array([
    151, 160, 137, 91, 90, 15, 131, 13, 201, 95, 96, 53, 194, 233, 7, 225, 140, 36, 103, 30, 69, 142,
    8, 99, 37, 240, 21, 10, 23, 190, 6, 148, 247, 120, 234, 75, 0, 26, 197, 62, 94, 252, 219, 203, 117,
    35, 11, 32, 57, 177, 33, 88, 237, 149, 56, 87, 174, 20, 125, 136, 171, 168, 68, 175, 74, 165, 71,
    134, 139, 48, 27, 166, 77, 146, 158, 231, 83, 111, 229, 122, 60, 211, 133, 230, 220, 105, 92, 41,
    55, 46, 245, 40, 244, 102, 143, 54, 65, 25, 63, 161, 1, 216, 80, 73, 209, 76, 132, 187, 208, 89,
    18, 169, 200, 196, 135, 130, 116, 188, 159, 86, 164, 100, 109, 198, 173, 186, 3, 64, 52, 217, 226,
    250, 124, 123, 5, 202, 38, 147, 118, 126, 255, 82, 85, 212, 207, 206, 59, 227, 47, 16, 58, 17, 182,
    189, 28, 42, 223, 183, 170, 213, 119, 248, 152, 2, 44, 154, 163, 70, 221, 153, 101, 155, 167, 43,
    172, 9, 129, 22, 39, 253, 19, 98, 108, 110, 79, 113, 224, 232, 178, 185, 112, 104, 218, 246, 97,
    228, 251, 34, 242, 193, 238, 210, 144, 12, 191, 179, 162, 241, 81, 51, 145, 235, 249, 14, 239,
    107, 49, 192, 214, 31, 181, 199, 106, 157, 184, 84, 204, 176, 115, 121, 50, 45, 127, 4, 150, 254,
    138, 236, 205, 93, 222, 114, 67, 29, 24, 72, 243, 141, 128, 195, 78, 66, 215, 61, 156, 180,
], dtype=np.int64)

AMPLITUDE = np.float32(0.4)
BOUND = 0.9520522046312158  # max |noise1(u)| over all gradient pairs (see tests)


@numba.njit(cache=True, nogil=True, inline="always")
def _gradient(h, f):
    """The ramp of lattice hash ``h`` at offset ``f`` (float32)."""
    g = np.float32((h & 7) + 1)
    if h & 8:
        g = np.float32(-1.0)
    return g * f


@numba.njit(cache=True, nogil=True)
def noise1(u, permutation):
    """Perlin noise at ``u`` (float, any sign), evaluated in float32 and
    returned widened to float64. permutation: int64 (256,)."""
    x = np.float32(u)
    cell = np.floor(x)
    f = x - cell
    i = np.int64(cell) & 255
    one = np.float32(1.0)
    fade = ((f * f) * f) * ((f * ((f * np.float32(6.0)) - np.float32(15.0))) + np.float32(10.0))
    left = _gradient(permutation[i], f)
    right = _gradient(permutation[(i + 1) & 255], f - one)
    return np.float64((left + fade * (right - left)) * AMPLITUDE)
