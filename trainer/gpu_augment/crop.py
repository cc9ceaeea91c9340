"""RandomResizedCrop as timm draws it and PIL resizes it, batched, with the
flips folded into the resize matrices.

* Within 1 grey level on under 1% of pixels (float32 where PIL uses fixed
  point): PIL's separable, antialiased bicubic/bilinear resize, done as
  batched matrix products, in the pass order of the installed Pillow (13
  changed it).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor

from .draws import draw_rand, draw_randint_inclusive, draw_uniform
from .fusion import fused


def _pillow_major() -> int:
    """The installed Pillow's major version (the CPU path's resize order depends on it)."""
    try:
        import PIL

        return int(PIL.__version__.split(".")[0])
    except (ImportError, ValueError):
        return 13


# Pillow 13 sometimes resizes along y first (see resized_crop); Pillow <= 12
# always along x first. Follow the Pillow the CPU path would use.
PILLOW_VERTICAL_FIRST = _pillow_major() >= 13


def sample_crop_boxes(
    batch: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
    tries: int = 10,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-sample crop boxes with timm's ``RandomResizedCropAndInterpolation.get_params``.

    Each sample makes ``tries`` draws at once (area fraction ~ U(scale),
    log-aspect ~ U(log ratio)) and keeps the first that fits in the image; a
    sample none of whose draws fits gets timm's central-crop fallback.
    Returns int64 tensors ``(top, left, h, w)``, each ``(batch,)``.
    """
    area = height * width
    target_area = draw_uniform((batch, tries), scale[0], scale[1], generator) * area
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(draw_uniform((batch, tries), log_lo, log_hi, generator))
    # torch.round is round-half-to-even, as is Python's round() that timm uses.
    w = torch.round(torch.sqrt(target_area * aspect)).to(torch.int64)
    h = torch.round(torch.sqrt(target_area / aspect)).to(torch.int64)
    fits = (w <= width) & (h <= height)  # timm's test (torchvision also asks for > 0)
    # argmax returns the first maximal index: the first try that fits.
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)
    any_fits = fits.any(dim=1)
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)

    # Central-crop fallback, as in timm (image size is the same for the batch).
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fh, fw = height, int(round(height * max(ratio)))
    else:
        fw, fh = width, height
    w = torch.where(any_fits, w, torch.full_like(w, fw))
    h = torch.where(any_fits, h, torch.full_like(h, fh))
    top = draw_randint_inclusive(0, height - h, generator)
    left = draw_randint_inclusive(0, width - w, generator)
    top = torch.where(any_fits, top, torch.full_like(top, (height - fh) // 2))
    left = torch.where(any_fits, left, torch.full_like(left, (width - fw) // 2))
    return top, left, h, w


def _cubic_kernel(t: Tensor, a: float) -> Tensor:
    """Keys' cubic convolution kernel with parameter a (support 2)."""
    t = t.abs()
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = (((t - 5) * t + 8) * t - 4) * a
    return torch.where(t < 1, near, torch.where(t < 2, far, torch.zeros_like(t)))


def _window_weights(
    start: Tensor, length: Tensor, in_size: int, out_size: int, cubic: Tensor | bool,
    reverse: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """PIL's resampling windows along one axis (see _resample_weights):
    float64 (N, out_size, taps) weights, already rounded to PIL's 22-bit
    fixed point, and int64 (N, out_size) the axis index of each window's
    first tap (taps past the span weigh 0)."""
    device = start.device
    taps = 2 * math.ceil(2.0 * max(in_size / out_size, 1.0)) + 1  # PIL's ksize at the widest crop
    start = start.to(torch.float64)[:, None, None]
    length = length.to(torch.float64)[:, None, None]
    scale = length / out_size
    filterscale = scale.clamp(min=1.0)
    if isinstance(cubic, Tensor):
        cubic = cubic.reshape(-1, 1, 1)
        support = torch.where(cubic, 2.0, 1.0) * filterscale
    else:
        support = (2.0 if cubic else 1.0) * filterscale
    index = torch.arange(out_size, device=device, dtype=torch.float64)[None, :, None]
    if reverse is not None:
        index = torch.where(reverse.reshape(-1, 1, 1), out_size - 1 - index, index)
    center = (index + 0.5) * scale
    xmin = torch.trunc(center - support + 0.5).clamp(min=0)
    xmax = torch.minimum(torch.trunc(center + support + 0.5), length)
    pos = xmin + torch.arange(taps, device=device, dtype=torch.float64)  # (N, out, taps), in the span
    t = (pos - center + 0.5) * (1.0 / filterscale)
    if isinstance(cubic, Tensor):
        weight = torch.where(cubic, _cubic_kernel(t, -0.5), (1 - t.abs()).clamp(min=0))
    else:  # one filter for the batch: compute only that one
        weight = _cubic_kernel(t, -0.5) if cubic else (1 - t.abs()).clamp(min=0)
    valid = pos < xmax
    weight = torch.where(valid, weight, torch.zeros_like(weight))
    total = weight.sum(-1, keepdim=True)
    weight = weight / torch.where(total == 0, torch.ones_like(total), total)
    one = float(1 << 22)  # PIL: PRECISION_BITS = 32 - 8 - 2, rounded half away from zero
    weight = torch.trunc(weight * one + torch.where(weight < 0, -0.5, 0.5)) / one
    return weight, (xmin + start).long()[:, :, 0]


@fused
def _resample_weights(
    start: Tensor, length: Tensor, in_size: int, out_size: int, cubic: Tensor | bool,
    reverse: Tensor | None = None, precision: str = "fp32"
) -> list[Tensor]:
    """Weights of PIL's ImagingResample along one axis, per sample, as a list
    of (N, out_size, in_size) float32 matrices that sum to them: the weights
    ('fp32'), or ('tf32x2') two parts exact in TF32 that sum to them within
    2**-22 (PIL's weights are 22-bit fixed point); see _product.

    Output pixel i of sample n reads the span [start[n], start[n] + length[n])
    of an axis of in_size pixels: centre c = (i + 0.5) * scale in the span,
    scale = length / out_size, taps [int(c - support + 0.5), int(c + support + 0.5))
    clipped to the span, weight filter((x - c + 0.5) / max(scale, 1)) normalised
    to sum 1, then rounded to PIL's 22-bit fixed point. The filter is PIL's
    bicubic (a = -0.5, support 2) where ``cubic`` (a bool for all samples, or
    bool (N,)), else its triangle (support 1); both widen by the scale when
    shrinking, which is PIL's antialiasing.

    ``reverse`` (bool (N,), optional) lists the output pixels backwards for
    the samples marked: the matrix of the resized crop followed by a flip of
    that axis (the same numbers, permuted), which makes flips free.

    The taps are computed in float64 (as PIL) on a window of ``taps`` pixels
    per output pixel, a bound fixed by the sizes alone (no look at the data,
    so no host sync), then spread into the dense matrix the matmul needs.
    """
    weight, first = _window_weights(start, length, in_size, out_size, cubic, reverse)
    device, taps = start.device, weight.shape[-1]
    # Split here, on the few taps, not on the dense matrices (mostly zeros).
    parts = _tf32_parts(weight.to(torch.float32)) if precision == "tf32x2" else [weight.to(torch.float32)]
    # The dense matrices, read from the taps: column j of output pixel i holds
    # tap j - first[i] (zero outside the window; taps past the span weigh 0
    # already). One pass that writes each matrix once, where zeros + scatter
    # wrote it twice. Rows are padded to a multiple of 8 floats: cuBLAS picks
    # its fast kernels only for 16-byte aligned rows (rows 513 floats apart
    # get its slow "align1" kernels).
    row = -(-in_size // 8) * 8
    tap = torch.arange(row, device=device, dtype=torch.int64) - first[:, :, None]  # (N, out, row)
    window = (tap >= 0) & (tap < taps)
    tap = tap.clamp(0, taps - 1)
    return [torch.where(window, part.gather(2, tap), torch.zeros_like(part[:, :, :1]))[:, :, :in_size]
            for part in parts]


def resize_order(h: Tensor, w: Tensor, size: int, pillow_vertical_first: bool | None = None) -> Tensor:
    """Which samples PIL resizes vertically first: bool (N,) for crop sizes h, w (N,).

    The order of the two passes matters (the first is rounded and clipped,
    and bicubic overshoots). Pillow 12 and earlier always run the horizontal
    pass first; Pillow 13 runs the vertical one first when
    ``h - size > 2 * max(w - size, 0)`` (found by comparing outputs over
    thousands of crop geometries, not from its source). pillow_vertical_first
    picks the behaviour (default: the installed Pillow's, PILLOW_VERTICAL_FIRST).
    """
    if pillow_vertical_first is None:
        pillow_vertical_first = PILLOW_VERTICAL_FIRST
    if not pillow_vertical_first:
        return torch.zeros(h.shape, dtype=torch.bool, device=h.device)
    return (h - size) > 2 * (w - size).clamp(min=0)


# How the resize's passes are computed: matrix products in float32 ("fp32")
# or as two TF32-exact products ("tf32x2", see _product), or ("taps") each
# output pixel summed from its window's few pixels, read directly (see
# _taps_pass): no products with the zeros outside the windows.
RESIZE_PRECISIONS = ("fp32", "tf32x2", "taps")


@dataclass
class Taps:
    """One resize pass as windows: ``weight`` float32 (..., S, T), the T tap
    weights of each of S output pixels, and ``first`` int64 (..., S), the
    input index of each window's first tap (leading dims: per sample, and a
    channel dim of 1). Indexing slices both, like the matrices' lists."""

    weight: Tensor
    first: Tensor

    def __getitem__(self, index) -> "Taps":
        return Taps(self.weight[index], self.first[index])


@fused
def _resample_taps(start: Tensor, length: Tensor, in_size: int, out_size: int, cubic: Tensor | bool,
                   reverse: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """_window_weights with float32 weights: (N, S, T), (N, S)."""
    weight, first = _window_weights(start, length, in_size, out_size, cubic, reverse)
    return weight.to(torch.float32), first


def axis_weights(start: Tensor, length: Tensor, in_size: int, out_size: int, cubic: Tensor | bool,
                 reverse: Tensor | None = None, precision: str = "fp32") -> list:
    """One resize axis as two_pass_resize takes it: [Taps] for precision
    "taps", else _resample_weights' matrices. Same arguments."""
    if precision == "taps":
        return [Taps(*_resample_taps(start, length, in_size, out_size, cubic, reverse))]
    return _resample_weights(start, length, in_size, out_size, cubic, reverse, precision)


def _round_to_tf32(w: Tensor) -> Tensor:
    """float32 w rounded (half away from zero) to TF32's 10 mantissa bits,
    as float32 whose low 13 mantissa bits are zero: a tensor core takes it
    as it is, whether it rounds or truncates its inputs."""
    bits = w.contiguous().view(torch.int32)
    return ((bits + 0x1000) & -0x2000).view(torch.float32)  # -0x2000: every bit but the low 13


def _tf32_parts(w: Tensor) -> list[Tensor]:
    """float32 w -> two float32 tensors exact in TF32 whose sum is w within
    2**-22 of |w| (the resolution of PIL's fixed-point weights): the leading
    11 significant bits, then the next 11."""
    high = _round_to_tf32(w)
    return [high, _round_to_tf32(w - high)]


@contextlib.contextmanager
def tf32_matmuls(on: bool) -> Iterator[None]:
    """Let CUDA float32 matmuls use TF32 tensor cores inside (when ``on``),
    restoring the caller's setting after (torch's own switch, which both of
    its TF32 APIs follow)."""
    if not on:
        yield
        return
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def _product(weights: list[Tensor], values: Tensor, weights_first: bool) -> Tensor:
    """(weights @ values if weights_first else values @ weights) in float32,
    broadcast over the two leading dims (N, C). ``weights``: the float32
    matrices _resample_weights returns (the weights, or two TF32-exact parts
    that sum to them); ``values``: integers in [0, 255].

    With two parts (precision 'tf32x2', run inside tf32_matmuls on CUDA)
    both operands of each product are exact in TF32 (integers below 2**11,
    and the parts), so TF32 tensor cores, which multiply exactly and add in
    float32, give the float32 product up to rounding, several times faster
    than float32 arithmetic. Elsewhere the same sum runs in float32.
    """
    values = values.to(torch.float32)
    out = None
    for w in weights:
        term = w @ values if weights_first else values @ w
        out = term if out is None else out + term
    return out


@fused
def _resize_pass(weights: list[Tensor], values: Tensor, weights_first: bool) -> Tensor:
    """One pass of the resize: the product (see _product) rounded and clipped
    to uint8 values as PIL does after each pass. float32 out."""
    return torch.floor(_product(weights, values, weights_first) + 0.5).clamp_(0, 255)


@fused
def _taps_pass(weight: Tensor, first: Tensor, values: Tensor, axis: int) -> Tensor:
    """One pass of the resize along ``axis`` (-1: x, -2: y) from its windows,
    rounded and clipped to uint8 values as PIL does after each pass.

    values (N, C, H, W) of integers in [0, 255] (any dtype); weight float32
    (N, 1, S, T) and first int64 (N, 1, S) (a Taps). Output pixel i is
    sum_t weight[i, t] * values[first[i] + t] in float32, tap by tap: T reads
    per output pixel where a matrix product reads the whole axis. Taps past
    the axis weigh 0 and read its last pixel. Compiled, the loop is one
    kernel; eagerly, one (N, C, rows, S) temporary per tap. float32 out,
    (N, C, S, W) for y, (N, C, H, S) for x."""
    if axis == -2:
        values = values.transpose(2, 3)
    n, c, rows, size = values.shape
    values = values.to(torch.float32)
    out = None
    for t in range(weight.shape[-1]):
        index = (first + t).clamp(max=size - 1)[:, :, None, :].expand(n, c, rows, -1)
        term = values.gather(3, index) * weight[..., t][:, :, None, :]
        out = term if out is None else out + term
    out = torch.floor(out + 0.5).clamp_(0, 255)
    return out.transpose(2, 3) if axis == -2 else out


def two_pass_resize(x: Tensor, wx: list[Tensor], wy: list[Tensor], rows_first: int,
                     switch_tf32: bool = True) -> Tensor:
    """PIL's separable resize as two passes (batched matrix products, or
    _taps_pass for Taps), each rounded to uint8 as PIL does. x (N, C, H, W)
    of integers in [0, 255], any dtype that holds them (uint8 is converted
    once, to what the pass needs); wx (N, 1, S, W), wy (N, 1, S, H):
    axis_weights' lists, with a channel dim. The first ``rows_first`` samples run the horizontal pass
    first, the others the vertical one. Returns float32 (N, C, S, S).
    switch_tf32: with TF32-exact weights (two parts) on CUDA, switch TF32
    matmuls on around the products (False: the caller has, e.g. outside a
    compiled region, which cannot switch it).
    """
    def horizontal(v: Tensor, w: list) -> Tensor:
        if isinstance(w[0], Taps):
            return _taps_pass(w[0].weight, w[0].first, v, -1)
        return _resize_pass([part.transpose(2, 3) for part in w], v, weights_first=False)

    def vertical(v: Tensor, w: list) -> Tensor:
        if isinstance(w[0], Taps):
            return _taps_pass(w[0].weight, w[0].first, v, -2)
        return _resize_pass(w, v, weights_first=True)

    def rows(w: list[Tensor], part: slice) -> list[Tensor]:
        return [m[part] for m in w]

    n, k = x.shape[0], rows_first
    first, rest = slice(0, k), slice(k, n)
    parts = []
    with tf32_matmuls(switch_tf32 and len(wx) > 1 and x.is_cuda):
        if k > 0:
            parts.append(vertical(horizontal(x[first], rows(wx, first)), rows(wy, first)))
        if k < n:
            parts.append(horizontal(vertical(x[rest], rows(wy, rest)), rows(wx, rest)))
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def resized_crop(
    x: Tensor,
    top: Tensor,
    left: Tensor,
    h: Tensor,
    w: Tensor,
    size: int,
    cubic: Tensor | bool = True,
    pillow_vertical_first: bool | None = None,
    hflip: Tensor | None = None,
    vflip: Tensor | None = None,
    precision: str = "fp32",
) -> Tensor:
    """Crop each sample's box and resize it to ``size x size`` as PIL's resize
    does, then flip the samples marked in hflip/vflip (bool (N,), optional).

    x: float32 (N, C, H, W) of integers in [0, 255]; top/left/h/w: int (N,);
    cubic: bool or bool (N,), PIL's BICUBIC where true, else BILINEAR.
    Returns float32 (N, C, size, size) of integers.

    Like PIL (which torchvision's resized_crop calls on a PIL image), the
    resize is separable: one pass along each axis, each a weighted sum over
    the antialiasing support, the first rounded to uint8. Here each pass is
    one batched matrix product with per-sample weight matrices that are zero
    outside the crop, so crops of every size go in one call; a flip lists a
    matrix's output pixels backwards, which costs nothing. The order of the
    passes follows resize_order (decided on the host: a sync when the boxes
    are on a GPU; GpuAugment plans it on the host). precision: how the
    products are computed (see _product).

    The sums run in float32, not PIL's fixed point: a value can differ by 1
    where the exact sum lies within float error of a rounding tie (and more
    often if TF32 matmuls are switched on globally).
    """
    if precision not in RESIZE_PRECISIONS:
        raise ValueError(f"resize precision must be one of {RESIZE_PRECISIONS}, got {precision!r}")
    n, c, height, width = x.shape
    vertical_first = resize_order(h, w, size, pillow_vertical_first).cpu()
    perm = torch.argsort(vertical_first.to(torch.uint8), stable=True).to(x.device)
    wx = [m[perm, None] for m in axis_weights(left, w, width, size, cubic, hflip, precision)]  # (N, 1, S, W)
    wy = [m[perm, None] for m in axis_weights(top, h, height, size, cubic, vflip, precision)]  # (N, 1, S, H)
    rows_first = n - int(vertical_first.sum())
    out = two_pass_resize(x[perm], wx, wy, rows_first)
    return out.index_select(0, torch.argsort(perm))


# Flips (folded into the resize: see _resample_weights)


def sample_flips(batch: int, hflip: float, vflip: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Per-sample flip decisions as torchvision draws them (flip if U < p). Bool (N,) each."""
    u = draw_rand((2, batch), generator)
    return u[0] < hflip, u[1] < vflip
