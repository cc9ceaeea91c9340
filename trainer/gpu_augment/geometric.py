"""PIL's affine transform (Image.transform(AFFINE), which timm's Rotate, Shear
and Translate call), batched with one matrix per sample.

Within 1 grey level on a few % of pixels (float32 where PIL uses float64):
PIL's a = -1 bicubic or its bilinear, with its fill and edge rules.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .draws import channel_constants
from .fusion import fused


# Geometric ops: each is an affine map from output to input pixel
# coordinates, PIL's Image.transform(AFFINE) convention: for the output pixel
# centre (x + 0.5, y + 0.5), read the input at (a x + b y + c, d x + e y + f),
# in coordinates where input pixel i spans [i, i + 1). One resampling then
# applies any mix of them to the batch.


def _matrix(a, b, c, d, e, f) -> Tensor:
    return torch.stack([torch.stack([a, b, c], -1), torch.stack([d, e, f], -1)], -2)


# The builders work in float64, as PIL and timm's Python floats do: (N,) -> (N, 2, 3).


def rotate_matrix(degrees: Tensor, height: int, width: int) -> Tensor:
    """PIL's Image.rotate(degrees) about the image centre (counter-clockwise): (N, 2, 3)."""
    angle = -torch.deg2rad(degrees.to(torch.float64))
    cos, sin = torch.cos(angle), torch.sin(angle)
    cx, cy = width / 2.0, height / 2.0
    c = cos * -cx + sin * -cy + cx
    f = -sin * -cx + cos * -cy + cy
    return _matrix(cos, sin, c, -sin, cos, f)


def shear_x_matrix(factor: Tensor) -> Tensor:
    factor = factor.to(torch.float64)
    one, zero = torch.ones_like(factor), torch.zeros_like(factor)
    return _matrix(one, factor, zero, zero, one, zero)


def shear_y_matrix(factor: Tensor) -> Tensor:
    factor = factor.to(torch.float64)
    one, zero = torch.ones_like(factor), torch.zeros_like(factor)
    return _matrix(one, zero, zero, factor, one, zero)


def translate_x_matrix(pct: Tensor, width: int) -> Tensor:
    """timm's translate_x_rel: shift by pct * width pixels (content moves left for pct > 0)."""
    pct = pct.to(torch.float64)
    one, zero = torch.ones_like(pct), torch.zeros_like(pct)
    return _matrix(one, zero, pct * width, zero, one, zero)


def translate_y_matrix(pct: Tensor, height: int) -> Tensor:
    pct = pct.to(torch.float64)
    one, zero = torch.ones_like(pct), torch.zeros_like(pct)
    return _matrix(one, zero, zero, zero, one, pct * height)


def _interpolate(x: Tensor, sx: Tensor, sy: Tensor, cubic: bool | Tensor) -> Tensor:
    """PIL's affine-transform interpolation (Geometry.c) at source points
    (sx, sy) float64 (N, H', W') in pixel coordinates (pixel i spans [i, i + 1)),
    edge pixels repeated. Bilinear: lerp(a, b, d) = a + (b - a) * d along x on
    two rows, then along y. Bicubic: PIL's cubic polynomial in d on four
    neighbours (Keys' kernel with a = -1; PIL's resize uses a = -0.5, torch's
    grid_sample a = -0.75), along x on four rows, then along y. Using PIL's
    own formulas keeps flat and linear regions exact in float32, which
    matters because the result is truncated. cubic: bool, or bool (N,) to
    choose per sample; then the bilinear result is made from the inner 4 of
    the 16 bicubic taps. Returns float32 (N, C, H', W').

    Each tap is its own gather from the edge-padded, flattened image (a
    padding of 2 stands in for clamping each tap, so tap (j, i) of a point
    sits at the fixed offset j * row + i from its top-left tap), used where
    it is needed: compiled, the taps are loads inside one kernel that writes
    only the result, where gathering all 16 into one tensor first made
    Inductor write and read it (282 MB per layer at 88 slots of 224 px).
    """
    n, c, h, w = x.shape
    fx, fy = sx - 0.5, sy - 0.5
    x0, y0 = torch.floor(fx), torch.floor(fy)
    dx = (fx - x0).to(x.dtype).reshape(n, 1, -1)
    dy = (fy - y0).to(x.dtype).reshape(n, 1, -1)
    any_cubic = not isinstance(cubic, bool) or cubic
    first = -1 if any_cubic else 0  # the offset of the first tap from the point's pixel
    pw = w + 4
    # Points far outside are clamped first; they get the fill colour anyway.
    x0 = x0.clamp(-1, w - 1)
    y0 = y0.clamp(-1, h - 1)
    base = ((y0 + 2 + first) * pw + (x0 + 2 + first)).long().reshape(n, 1, -1)  # (N, 1, points)
    flat = F.pad(x, (2, 2, 2, 2), mode="replicate").reshape(n, c, (h + 4) * pw)

    def tap(row: int, column: int) -> Tensor:  # (N, C, points)
        return flat.gather(2, (base + (row * pw + column)).expand(n, c, -1))

    def lerp(v0: Tensor, v1: Tensor, d: Tensor) -> Tensor:
        return v0 + (v1 - v0) * d

    def cubic_combine(v: list[Tensor], d: Tensor) -> Tensor:
        p2 = v[2] - v[0]
        p3 = 2 * (v[0] - v[1]) + v[2] - v[3]
        p4 = v[1] - v[0] - v[2] + v[3]
        return v[1] + d * (p2 + d * (p3 + d * p4))

    inner = (1, 2) if any_cubic else (0, 1)  # the bilinear neighbours among the taps

    def bilinear() -> Tensor:
        rows = [lerp(tap(j, inner[0]), tap(j, inner[1]), dx) for j in inner]
        return lerp(rows[0], rows[1], dy)

    def bicubic() -> Tensor:
        rows = [cubic_combine([tap(j, i) for i in range(4)], dx) for j in range(4)]
        return cubic_combine(rows, dy)

    if isinstance(cubic, bool):
        out = bicubic() if cubic else bilinear()
    else:
        out = torch.where(cubic.view(n, 1, 1), bicubic(), bilinear())
    return out.view(n, c, *sx.shape[1:])


@fused
def affine(x: Tensor, matrix: Tensor, fill: tuple[float, ...], cubic: Tensor | bool = True) -> Tensor:
    """Resample each sample through its (N, 2, 3) output->input matrix, as PIL's
    Image.transform(AFFINE) (which timm's rotate/shear/translate call).

    As in PIL, a pixel whose source point lies outside the input gets ``fill``
    (one value per channel of x), interpolation near the edge repeats the edge
    pixels, and the result is truncated to an integer. cubic: bool or bool (N,):
    PIL's bicubic where true, else its bilinear (see _interpolate).
    Returns float32 (N, C, H, W) of integers.
    """
    n, c, h, w = x.shape
    # Source points in float64, as PIL computes them (a pixel value read a
    # hair left or right of an integer position truncates differently):
    # (a x + b y) + c for both coordinates at once, (N, 2, H, W).
    ys = torch.arange(h, device=x.device, dtype=torch.float64).view(1, 1, h, 1) + 0.5
    xs = torch.arange(w, device=x.device, dtype=torch.float64).view(1, 1, 1, w) + 0.5
    m = matrix.to(torch.float64)[:, :, :, None, None]  # (N, 2, 3, 1, 1)
    source = m[:, :, 0] * xs + m[:, :, 1] * ys + m[:, :, 2]
    sx, sy = source[:, 0], source[:, 1]
    out = _interpolate(x, sx, sy, cubic)  # cubic may be a per-sample choice ('random' interpolation)
    outside = ((sx < 0) | (sx >= w) | (sy < 0) | (sy >= h))[:, None]
    out = out.clamp_(0, 255).floor_()  # PIL truncates
    if len(set(fill)) == 1:  # one number: no per-channel tensor to make
        return out.masked_fill_(outside, float(fill[0]))
    return torch.where(outside, channel_constants(fill, x.device).view(1, -1, 1, 1), out)
