"""The value-mapping and filtering ops of RandAugment and ColorJitter (PIL's
ImageOps / ImageEnhance on uint8 images), and normalisation, batched with a
per-sample argument.

Exact against PIL: AutoContrast, Equalize, Invert, Posterize, Solarize,
SolarizeAdd, Brightness, Contrast, Color, Sharpness. Images are float32
(N, C, H, W) holding integers in [0, 255]; each op rounds or truncates as PIL
does, so the next op sees what it would see on a PIL uint8 image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .draws import channel_constants
from .fusion import fused


# Pixel ops. The ones that map each value independently are built as
# per-sample look-up tables (N, C, 256): building them is free next to
# touching the image, and the tables of several ops can be merged into one
# per-sample table, so a whole RandAugment layer of them costs one gather.


def lut_levels(n: int, device) -> Tensor:
    return torch.arange(256, device=device, dtype=torch.float32).expand(n, 1, 256)


@fused
def apply_lut(x: Tensor, lut: Tensor) -> Tensor:
    """out[n, c, i, j] = lut[n, c, x[n, c, i, j]]. x float (N, C, H, W) of integers in
    [0, 255]; lut float (N, C, 256) or (N, 1, 256) (one table for all channels)."""
    n, c, h, w = x.shape
    lut = lut.expand(n, c, 256)
    return lut.gather(2, x.reshape(n, c, h * w).long()).view(n, c, h, w)


def _blend(degenerate: Tensor, image: Tensor, factor: Tensor) -> Tensor:
    """PIL's Image.blend on uint8: float32 ``d + f * (i - d)``, truncated, clipped
    (ImageEnhance's enhance() is blend(degenerate, image, factor))."""
    return (degenerate + factor * (image - degenerate)).clamp_(0, 255).floor_()


def sample_column(v: Tensor, dims: int) -> Tensor:
    """A per-sample (N,) tensor shaped to broadcast against an N-first tensor of ``dims`` dims."""
    return v.reshape(-1, *([1] * (dims - 1)))


def invert_lut(n: int, device) -> Tensor:
    return 255.0 - lut_levels(n, device)


def posterize_lut(bits: Tensor) -> Tensor:
    # PIL keeps the top `bits` bits: i & ~(2**(8 - bits) - 1). bits = 0 keeps
    # none, i.e. black (Pillow 13 raises for 0 bits; timm's inc1 mapping asks
    # for it at magnitude 10). bits >= 8 is the identity, as in timm.
    q = torch.pow(2.0, 8 - bits.clamp(0, 8))
    i = lut_levels(bits.shape[0], bits.device)
    return torch.floor(i / sample_column(q, 3)) * sample_column(q, 3)


def solarize_lut(thresh: Tensor) -> Tensor:
    i = lut_levels(thresh.shape[0], thresh.device)
    return torch.where(i < sample_column(thresh, 3), i, 255.0 - i)


def solarize_add_lut(add: Tensor, thresh: float = 128) -> Tensor:
    i = lut_levels(add.shape[0], add.device)
    return torch.where(i < thresh, (i + sample_column(add, 3)).clamp(max=255), i)


def brightness_lut(factor: Tensor) -> Tensor:
    # ImageEnhance.Brightness blends with a black image.
    i = lut_levels(factor.shape[0], factor.device)
    return _blend(torch.zeros_like(i), i, sample_column(factor, 3))


def contrast_lut(factor: Tensor, mean: Tensor) -> Tensor:
    # ImageEnhance.Contrast blends with a flat image of the (rounded) mean of
    # the L image; mean: float (N,) integer-valued.
    i = lut_levels(factor.shape[0], factor.device)
    return _blend(sample_column(mean, 3).expand_as(i), i, sample_column(factor, 3))


# Copies of each histogram that neighbouring pixels count into (pixel p into
# copy p % _HISTOGRAM_COPIES), summed afterwards. A fractal image is mostly
# black: with a single copy nearly every atomic add of a warp hits the same
# bin 0 and they serialise; with 32 the lanes of a warp hit 32 addresses.
_HISTOGRAM_COPIES = 32


def channel_histogram(x: Tensor) -> Tensor:
    """Per (sample, channel) histogram of an integer-valued [0, 255] image: int64 (N, C, 256).
    One scatter_add over the batch, each (n, c) offset into its own _HISTOGRAM_COPIES x 256
    bins (see _HISTOGRAM_COPIES), then the copies summed."""
    n, c, h, w = x.shape
    copies = min(_HISTOGRAM_COPIES, h * w)
    copy_offset = (torch.arange(h * w, device=x.device) % copies) * 256  # (H*W,)
    plane_offset = torch.arange(n * c, device=x.device)[:, None] * (copies * 256)  # (N*C, 1)
    idx = x.reshape(n * c, h * w).long() + copy_offset + plane_offset
    hist = torch.zeros(n * c * copies * 256, dtype=torch.int64, device=x.device)
    ones = torch.ones(1, dtype=torch.int64, device=x.device).expand(idx.numel())  # no allocation
    hist.scatter_add_(0, idx.reshape(-1), ones)
    return hist.view(n, c, copies, 256).sum(2)


@fused
def auto_contrast_lut(hist: Tensor) -> Tensor:
    # ImageOps.autocontrast (cutoff 0): stretch [lo, hi] of each channel to
    # [0, 255] with lut[i] = int(i * scale + offset), clipped; identity where
    # hi <= lo. Float64 on the 256-entry table reproduces PIL's Python floats.
    present = hist > 0
    lo = present.to(torch.uint8).argmax(-1, keepdim=True).to(torch.float64)
    hi = 255 - present.flip(-1).to(torch.uint8).argmax(-1, keepdim=True).to(torch.float64)
    i = torch.arange(256, device=hist.device, dtype=torch.float64)
    span = (hi - lo).clamp(min=1)
    # A true division: torch computes `scalar / tensor` through a reciprocal,
    # which is an ulp off Python's 255.0 / span and then truncates differently.
    scale = torch.full_like(span, 255.0) / span
    offset = -lo * scale
    lut = torch.trunc(i * scale + offset).clamp(0, 255)
    return torch.where(hi > lo, lut, i).to(torch.float32)


@fused
def equalize_lut(hist: Tensor) -> Tensor:
    # ImageOps.equalize: step = (total - count of the last non-empty bin) // 255;
    # lut[i] = (step // 2 + number of pixels below i) // step, which PIL's
    # point() clips to 255; identity with <= 1 non-empty bin or step == 0.
    present = hist > 0
    last = 255 - present.flip(-1).to(torch.uint8).argmax(-1, keepdim=True)
    step = (hist.sum(-1, keepdim=True) - hist.gather(-1, last)) // 255
    below = hist.cumsum(-1) - hist
    lut = ((step // 2 + below) // step.clamp(min=1)).clamp(max=255)
    identity = (present.sum(-1, keepdim=True) <= 1) | (step == 0)
    i = torch.arange(256, device=hist.device, dtype=torch.int64)
    return torch.where(identity, i, lut).to(torch.float32)


def _luma(x: Tensor) -> Tensor:
    """PIL's RGB -> L: (R*19595 + G*38470 + B*7471 + 0x8000) >> 16, exact in float32
    (all partial sums are integers below 2**24). (N, 1, H, W); C = 1 is its own luma."""
    if x.shape[1] == 1:
        return x
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return torch.floor((r * 19595 + g * 38470 + b * 7471 + 32768) / 65536)


def luma_mean(x: Tensor) -> Tensor:
    # ImageEnhance.Contrast: int(mean of the L image + 0.5). Summed in float64
    # so that big images still sum exactly.
    n = x.shape[0]
    total = _luma(x).reshape(n, -1).to(torch.float64).sum(-1)
    # Tensor / tensor: CUDA divides by a Python scalar through its reciprocal,
    # which could move a mean of exactly k + 0.5 below the rounding tie.
    mean = total / torch.full_like(total, x.shape[2] * x.shape[3])
    return torch.floor(mean + 0.5).to(torch.float32)


def invert(x: Tensor) -> Tensor:
    """ImageOps.invert: 255 - x. x float32 (N, C, H, W) of integers in [0, 255]."""
    return apply_lut(x, invert_lut(x.shape[0], x.device))


def posterize(x: Tensor, bits: Tensor) -> Tensor:
    """Keep the top ``bits`` (N,) bits of each value; 0 bits gives black."""
    return apply_lut(x, posterize_lut(bits.to(torch.float32)))


def solarize(x: Tensor, thresh: Tensor) -> Tensor:
    """ImageOps.solarize: values >= thresh (N,) are inverted."""
    return apply_lut(x, solarize_lut(thresh.to(torch.float32)))


def solarize_add(x: Tensor, add: Tensor, thresh: float = 128) -> Tensor:
    """timm's solarize_add: values < thresh get ``add`` (N,) added, clipped to 255."""
    return apply_lut(x, solarize_add_lut(add.to(torch.float32), thresh))


def auto_contrast(x: Tensor) -> Tensor:
    """ImageOps.autocontrast, per sample and channel."""
    return apply_lut(x, auto_contrast_lut(channel_histogram(x)))


def equalize(x: Tensor) -> Tensor:
    """ImageOps.equalize, per sample and channel."""
    return apply_lut(x, equalize_lut(channel_histogram(x)))


def brightness(x: Tensor, factor: Tensor) -> Tensor:
    """ImageEnhance.Brightness with a per-sample factor (N,)."""
    return apply_lut(x, brightness_lut(factor.to(torch.float32)))


def contrast(x: Tensor, factor: Tensor) -> Tensor:
    """ImageEnhance.Contrast with a per-sample factor (N,)."""
    return apply_lut(x, contrast_lut(factor.to(torch.float32), luma_mean(x)))


@fused
def color(x: Tensor, factor: Tensor) -> Tensor:
    """ImageEnhance.Color (saturation): blend with the L image. Identity for C = 1
    (and for gray RGB images, whose L is the image itself)."""
    if x.shape[1] == 1:
        return x
    return _blend(_luma(x), x, sample_column(factor.to(torch.float32), 4))


@fused
def sharpness(x: Tensor, factor: Tensor) -> Tensor:
    """ImageEnhance.Sharpness: blend with PIL's SMOOTH filter (3x3 kernel
    [[1,1,1],[1,5,1],[1,1,1]] / 13, rounded, border pixels copied)."""
    n, c, h, w = x.shape
    if h < 3 or w < 3:
        return x.clone()
    # Kernel sum = 9 * (3x3 mean) + 4 * centre; avg_pool2d is far faster than
    # cuDNN's conv for one channel. The sum / 13 is never within 0.5 / 13 of a
    # rounding tie, so float32 error cannot change PIL's round-half-up result.
    flat = x.reshape(n * c, 1, h, w)
    total = F.avg_pool2d(flat, 3, stride=1) * 9 + 4 * flat[:, :, 1:-1, 1:-1]
    inner = torch.floor(total / 13 + 0.5).view(n, c, h - 2, w - 2)
    degenerate = x.clone()
    degenerate[:, :, 1:-1, 1:-1] = inner
    return _blend(degenerate, x, sample_column(factor.to(torch.float32), 4))


# Normalisation


@fused
def normalize(x: Tensor, mean: tuple[float, ...] | Tensor, std: tuple[float, ...] | Tensor) -> Tensor:
    """ToTensor + Normalize: x float (N, C, H, W) in [0, 255] (C = 1 expanded to 3)
    -> float32 (N, 3, H, W) of (x / 255 - mean) / std. mean/std: per-channel
    numbers, or float32 (C,) tensors on x's device (made once by the caller)."""
    m = mean if isinstance(mean, Tensor) else channel_constants(mean, x.device)
    s = std if isinstance(std, Tensor) else channel_constants(std, x.device)
    if x.shape[1] == 1:
        x = x.expand(-1, m.shape[0], -1, -1)
    return (x / 255.0 - m.view(1, -1, 1, 1)) / s.view(1, -1, 1, 1)
