"""The DeiT/timm training augmentation, batched on the device.

The CPU reference path is timm's ``create_transform(is_training=True, ...)``
(RandomResizedCrop, flips, RandAugment ``rand-m9-mstd0.5-inc1``, ToTensor,
Normalize, RandomErasing) followed by ``timm.data.Mixup``. With 1,000 tiny
images replayed tens of thousands of times, that PIL pipeline is the
bottleneck, so this module does the same recipe on a batch of uint8 images
already resident on the device, in plain torch: it runs on ``device="cpu"``
in tests and on CUDA for speed, needs no compilation, and keeps no global
state (each DDP rank augments its own batch with its own generator).

Conventions
-----------
* Every random number comes from the ``torch.Generator`` passed in; neither
  torch's global RNG, numpy nor ``random`` is touched, so the same seed gives
  bit-identical output on the same device.
* Until normalisation, images are float32 tensors ``(N, C, H, W)`` holding
  integers in [0, 255]: each step rounds (or truncates, where PIL truncates)
  and clamps its result, so the integer-valued ops (posterize, solarize,
  equalize, ...) see what they would see on a PIL uint8 image.
* Grayscale input stays single-channel through the pixel ops whenever the
  fill colour is the same in all channels (always, for the default
  mean = 0.5): every op of the recipe maps an image with three identical
  channels to one with three identical channels (PIL's RGB->L of (v, v, v)
  is v), so this is exact and does a third of the work. The image is
  expanded to three channels just before normalisation.
* No op synchronises with the host: per-sample choices are applied with
  ``torch.where`` over the batch rather than by indexing subsets.

Fidelity to timm/PIL (tested op by op against PIL in tests/test_gpu_augment.py)
-----------------------------------------------------------------------------
* Exact: the value-mapping RandAugment ops (AutoContrast, Equalize, Invert,
  Posterize, Solarize, SolarizeAdd, Brightness, Contrast), Color, Sharpness,
  and the argument mappings (timm's ``LEVEL_TO_ARG``).
* Exact: torchvision's ColorJitter (brightness, contrast, saturation in a
  random order), where timm uses it.
* Within 1 grey level on under 1% of pixels (float32 where PIL uses fixed
  point or float64): the RandomResizedCrop resize (PIL's separable,
  antialiased bicubic/bilinear, done as batched matrix products, in the pass
  order of the installed Pillow: 13 changed it) and the geometric ops (PIL's
  affine transform with its a = -1 bicubic or its bilinear).
* Deviation: PosterizeIncreasing asks for 0 bits at magnitude 10 (timm's
  mapping, about 2% of its draws with mstd 0.5); Pillow 13 rejects 0 bits,
  here 0 bits keeps no bits, i.e. a black image.
* Deviation: Mixup accepts an odd batch (the middle sample is mixed with
  itself) where timm asserts an even one.
* The random streams differ (torch's generator, not Python's ``random`` and
  numpy's): the same distributions, not the same draws.

Speed (H200, torch 2.11, default recipe, 512x512 grey uint8 -> 224): about
20 ms for a batch of 256 (12-14k images/s; timm's PIL pipeline does about
260 images/s per CPU core). Small images are bound by kernel launches
(64 -> 32, batch 256: about 14 ms, nearly all of it the host launching kernels).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .recipe import AugmentRecipe

__all__ = [
    "GpuAugment",
    "AugmentPlan",
    "GENERATOR_ON_HOST",
    "PILLOW_VERTICAL_FIRST",
    "RandAugmentConfig",
    "RAND_INCREASING_TRANSFORMS",
    "RAND_TRANSFORMS",
    "parse_rand_augment",
    "sample_crop_boxes",
    "resize_order",
    "resized_crop",
    "sample_flips",
    "sample_rand_augment_layer",
    "LayerPlan",
    "plan_rand_augment_layer",
    "apply_rand_augment_layer",
    "rand_augment_layer",
    "level_to_arg",
    "apply_lut",
    "invert",
    "posterize",
    "solarize",
    "solarize_add",
    "auto_contrast",
    "equalize",
    "brightness",
    "contrast",
    "color",
    "sharpness",
    "affine",
    "rotate_matrix",
    "shear_x_matrix",
    "shear_y_matrix",
    "translate_x_matrix",
    "translate_y_matrix",
    "sample_color_jitter",
    "color_jitter",
    "normalize",
    "sample_erasing_boxes",
    "random_erasing",
    "sample_beta",
    "sample_mix_params",
    "sample_cutmix_box",
    "mix_choice",
    "mix_batch",
    "smoothed_targets",
]

# timm's RandAugment op lists, in timm's order (auto_augment.py), so that an
# op index means the same op here and there.
RAND_INCREASING_TRANSFORMS = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "PosterizeIncreasing",
    "SolarizeIncreasing",
    "SolarizeAdd",
    "ColorIncreasing",
    "ContrastIncreasing",
    "BrightnessIncreasing",
    "SharpnessIncreasing",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
)
RAND_TRANSFORMS = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "Posterize",
    "Solarize",
    "SolarizeAdd",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
)

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

_LEVEL_DENOM = 10.0  # timm: magnitude M maps to the fraction M / 10 of each op's range
_TRANSLATE_PCT = 0.45  # timm's default hparams['translate_pct'] for the *Rel translations

# Kinds of op, by how they are batched (see rand_augment_layer).
_LUT_OPS = {
    "AutoContrast", "Equalize", "Invert", "Posterize", "PosterizeIncreasing", "Solarize",
    "SolarizeIncreasing", "SolarizeAdd", "Contrast", "ContrastIncreasing", "Brightness",
    "BrightnessIncreasing",
}
_AFFINE_OPS = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"}
_COLOR_OPS = {"Color", "ColorIncreasing"}
_SHARPNESS_OPS = {"Sharpness", "SharpnessIncreasing"}


# ---------------------------------------------------------------------------
# Random helpers: every draw goes through the caller's generator.


def _rand(shape: tuple[int, ...], generator: torch.Generator, dtype=torch.float32) -> Tensor:
    return torch.rand(shape, generator=generator, device=generator.device, dtype=dtype)


def _randn(shape: tuple[int, ...], generator: torch.Generator, dtype=torch.float32) -> Tensor:
    return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype)


def _channels(values, device) -> Tensor:
    """Per-channel constants (C,) float32 made on the device by fill kernels,
    not torch.tensor(list), whose host-to-device copy would wait for the host."""
    return torch.stack([torch.full((), float(v), device=device) for v in values])


def _uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator) -> Tensor:
    return _rand(shape, generator) * (high - low) + low


def _randint_inclusive(low: Tensor | int, high: Tensor, generator: torch.Generator) -> Tensor:
    """Integers uniform on [low, high] (both inclusive, like random.randint) with
    per-element bounds, which torch.randint cannot take. int64, high's shape."""
    u = _rand(tuple(high.shape), generator, dtype=torch.float64)
    span = (high - low + 1).to(torch.float64)
    # u < 1, so floor(u * span) <= span - 1; the clamp only guards rounding.
    return (low + torch.floor(u * span).to(torch.int64)).minimum(high)


# ---------------------------------------------------------------------------
# 1. RandomResizedCrop


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
    target_area = _uniform((batch, tries), scale[0], scale[1], generator) * area
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(_uniform((batch, tries), log_lo, log_hi, generator))
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
    top = _randint_inclusive(0, height - h, generator)
    left = _randint_inclusive(0, width - w, generator)
    top = torch.where(any_fits, top, torch.full_like(top, (height - fh) // 2))
    left = torch.where(any_fits, left, torch.full_like(left, (width - fw) // 2))
    return top, left, h, w


def _cubic_kernel(t: Tensor, a: float) -> Tensor:
    """Keys' cubic convolution kernel with parameter a (support 2)."""
    t = t.abs()
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = (((t - 5) * t + 8) * t - 4) * a
    return torch.where(t < 1, near, torch.where(t < 2, far, torch.zeros_like(t)))


def _resample_weights(
    start: Tensor, length: Tensor, in_size: int, out_size: int, cubic: Tensor, reverse: Tensor | None = None
) -> Tensor:
    """Weights of PIL's ImagingResample along one axis, per sample: float32 (N, out_size, in_size).

    Output pixel i of sample n reads the span [start[n], start[n] + length[n])
    of an axis of in_size pixels: centre c = (i + 0.5) * scale in the span,
    scale = length / out_size, taps [int(c - support + 0.5), int(c + support + 0.5))
    clipped to the span, weight filter((x - c + 0.5) / max(scale, 1)) normalised
    to sum 1, then rounded to PIL's 22-bit fixed point. The filter is PIL's
    bicubic (a = -0.5, support 2) where ``cubic``, else its triangle (support 1);
    both widen by the scale when shrinking, which is PIL's antialiasing.

    ``reverse`` (bool (N,), optional) lists the output pixels backwards for
    the samples marked: the matrix of the resized crop followed by a flip of
    that axis (the same numbers, permuted), which makes flips free.

    The taps are computed in float64 (as PIL) on a window of ``taps`` pixels
    per output pixel, a bound fixed by the sizes alone (no look at the data,
    so no host sync), then scattered into the dense matrix the matmul needs.
    """
    n = start.shape[0]
    device = start.device
    taps = 2 * math.ceil(2.0 * max(in_size / out_size, 1.0)) + 1  # PIL's ksize at the widest crop
    start = start.to(torch.float64)[:, None, None]
    length = length.to(torch.float64)[:, None, None]
    scale = length / out_size
    filterscale = scale.clamp(min=1.0)
    cubic = cubic.reshape(-1, 1, 1)
    support = torch.where(cubic, 2.0, 1.0) * filterscale
    index = torch.arange(out_size, device=device, dtype=torch.float64)[None, :, None]
    if reverse is not None:
        index = torch.where(reverse.reshape(-1, 1, 1), out_size - 1 - index, index)
    center = (index + 0.5) * scale
    xmin = torch.trunc(center - support + 0.5).clamp(min=0)
    xmax = torch.minimum(torch.trunc(center + support + 0.5), length)
    pos = xmin + torch.arange(taps, device=device, dtype=torch.float64)  # (N, out, taps), in the span
    t = (pos - center + 0.5) * (1.0 / filterscale)
    weight = torch.where(cubic, _cubic_kernel(t, -0.5), (1 - t.abs()).clamp(min=0))
    valid = pos < xmax
    weight = torch.where(valid, weight, torch.zeros_like(weight))
    total = weight.sum(-1, keepdim=True)
    weight = weight / torch.where(total == 0, torch.ones_like(total), total)
    one = float(1 << 22)  # PIL: PRECISION_BITS = 32 - 8 - 2, rounded half away from zero
    weight = torch.trunc(weight * one + torch.where(weight < 0, -0.5, 0.5)) / one
    # Taps past the span go to a spare column in_size, dropped after the scatter,
    # so every kept column is written once (scatter_, deterministic).
    column = torch.where(valid, pos + start, torch.full_like(pos, in_size)).long()
    dense = torch.zeros((n, out_size, in_size + 1), device=device, dtype=torch.float32)
    dense.scatter_(2, column, weight.to(torch.float32))
    return dense[:, :, :in_size]


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


def _two_pass_resize(x: Tensor, wx: Tensor, wy: Tensor, rows_first: int) -> Tensor:
    """PIL's separable resize as two batched matrix products, each pass rounded
    to uint8 as PIL does. x float32 (N, C, H, W); wx (N, 1, S, W), wy (N, 1, S, H)
    from _resample_weights. The first ``rows_first`` samples run the horizontal
    pass first, the others the vertical one. Returns float32 (N, C, S, S)."""
    def to_uint8(v: Tensor) -> Tensor:
        return torch.floor(v + 0.5).clamp_(0, 255)

    n, k = x.shape[0], rows_first
    parts = []
    if k > 0:
        parts.append(to_uint8(wy[:k] @ to_uint8(x[:k] @ wx[:k].transpose(2, 3))))
    if k < n:
        parts.append(to_uint8(to_uint8(wy[k:] @ x[k:]) @ wx[k:].transpose(2, 3)))
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
    are on a GPU; GpuAugment plans it on the host).

    The sums run in float32, not PIL's fixed point: a value can differ by 1
    where the exact sum lies within float error of a rounding tie (and more
    often if TF32 matmuls are switched on globally).
    """
    n, c, height, width = x.shape
    if isinstance(cubic, bool):
        cubic = torch.full((n,), cubic, dtype=torch.bool, device=x.device)
    wx = _resample_weights(left, w, width, size, cubic, hflip)[:, None]  # (N, 1, S, W)
    wy = _resample_weights(top, h, height, size, cubic, vflip)[:, None]  # (N, 1, S, H)
    vertical_first = resize_order(h, w, size, pillow_vertical_first).cpu()
    perm = torch.argsort(vertical_first.to(torch.uint8), stable=True).to(x.device)
    rows_first = n - int(vertical_first.sum())
    out = _two_pass_resize(x[perm], wx[perm], wy[perm], rows_first)
    return out.index_select(0, torch.argsort(perm))


# ---------------------------------------------------------------------------
# 2. Flips


def sample_flips(batch: int, hflip: float, vflip: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Per-sample flip decisions as torchvision draws them (flip if U < p). Bool (N,) each."""
    u = _rand((2, batch), generator)
    return u[0] < hflip, u[1] < vflip


# ---------------------------------------------------------------------------
# 3. RandAugment


@dataclass(frozen=True)
class RandAugmentConfig:
    """A parsed timm RandAugment string, e.g. ``rand-m9-mstd0.5-inc1``."""

    magnitude: float = 10.0
    num_layers: int = 2
    prob: float = 0.5
    magnitude_std: float = 0.0  # inf: uniform on [0, magnitude]
    magnitude_max: float = _LEVEL_DENOM
    ops: tuple[str, ...] = RAND_TRANSFORMS


def parse_rand_augment(config: str) -> RandAugmentConfig:
    """Parse timm's RandAugment config string (the sections timm's
    ``rand_augment_transform`` knows, except a 't' transform-set choice)."""
    sections = config.split("-")
    if sections[0] != "rand":
        raise NotImplementedError(f"only RandAugment ('rand-...') is implemented on the GPU, not {config!r}")
    values: dict = {}
    increasing = False
    for section in sections[1:]:
        parts = re.split(r"(\d.*)", section)
        if len(parts) < 2:
            continue
        key, val = parts[:2]
        if key == "mstd":
            std = float(val)
            values["magnitude_std"] = float("inf") if std > 100 else std
        elif key == "mmax":
            values["magnitude_max"] = float(int(val))
        elif key == "inc":
            increasing = bool(int(val))
        elif key == "m":
            values["magnitude"] = float(int(val))
        elif key == "n":
            values["num_layers"] = int(val)
        elif key == "p":
            values["prob"] = float(val)
        else:
            raise NotImplementedError(f"RandAugment section {section!r} of {config!r} is not supported")
    ops = RAND_INCREASING_TRANSFORMS if increasing else RAND_TRANSFORMS
    return RandAugmentConfig(ops=ops, **values)


def sample_rand_augment_layer(
    batch: int, cfg: RandAugmentConfig, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One RandAugment layer's per-sample draws, as timm's ``AugmentOp`` makes them.

    Returns ``(op, apply, magnitude, sign)``: op int64 (N,) uniform over
    cfg.ops (timm picks with replacement); apply bool (N,) with P = cfg.prob;
    magnitude float32 (N,) ~ N(m, mstd) (or U(0, m) for mstd = inf) clipped to
    [0, mmax]; sign float32 (N,) of +-1, each with P = 0.5, for the ops that
    timm randomly negates.
    """
    op = torch.randint(len(cfg.ops), (batch,), generator=generator, device=generator.device)
    u = _rand((2, batch), generator)
    apply = u[0] <= cfg.prob  # timm skips the op when random() > prob
    sign = torch.where(u[1] > 0.5, -1.0, 1.0)  # timm negates when random() > 0.5
    if cfg.magnitude_std == float("inf"):
        magnitude = _rand((batch,), generator) * cfg.magnitude
    elif cfg.magnitude_std > 0:
        magnitude = cfg.magnitude + cfg.magnitude_std * _randn((batch,), generator)
    else:
        magnitude = torch.full((batch,), cfg.magnitude, device=generator.device)
    magnitude = magnitude.clamp(0.0, cfg.magnitude_max)
    return op, apply, magnitude, sign


def level_to_arg(name: str, magnitude: Tensor, sign: Tensor) -> Tensor:
    """timm's ``LEVEL_TO_ARG`` for one op name, per sample: float32 (N,).

    Computed in float64 like timm's Python floats, so that int() of e.g.
    0.7 * 110 lands on the same integer. Integer arguments (posterize bits,
    solarize thresholds) come back as integer-valued floats; ``int()`` of a
    non-negative float is floor.
    """
    level = magnitude.to(torch.float64) / _LEVEL_DENOM
    sign = sign.to(torch.float64)
    if name == "Rotate":
        arg = level * 30.0 * sign
    elif name == "Posterize":
        arg = torch.floor(level * 4)
    elif name == "PosterizeIncreasing":
        arg = 4 - torch.floor(level * 4)
    elif name == "Solarize":
        arg = torch.floor(level * 256).clamp(max=256)
    elif name == "SolarizeIncreasing":
        arg = 256 - torch.floor(level * 256).clamp(max=256)
    elif name == "SolarizeAdd":
        arg = torch.floor(level * 110).clamp(max=128)
    elif name in ("Color", "Contrast", "Brightness", "Sharpness"):
        arg = level * 1.8 + 0.1
    elif name in ("ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing"):
        arg = (1.0 + sign * (level * 0.9)).clamp(min=0.1)
    elif name in ("ShearX", "ShearY"):
        arg = level * 0.3 * sign
    elif name in ("TranslateXRel", "TranslateYRel"):
        arg = level * _TRANSLATE_PCT * sign
    elif name in ("AutoContrast", "Equalize", "Invert"):
        arg = torch.zeros_like(level)  # no argument
    else:
        raise ValueError(f"unknown RandAugment op {name!r}")
    return arg.to(torch.float32)


# Pixel ops. The ones that map each value independently are built as
# per-sample look-up tables (N, C, 256): building them is free next to
# touching the image, and a sample's table can be chosen among several ops
# with one torch.where, so a whole RandAugment layer of them costs one gather.


def _levels(n: int, device) -> Tensor:
    return torch.arange(256, device=device, dtype=torch.float32).expand(n, 1, 256)


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


def _col(v: Tensor, dims: int) -> Tensor:
    """A per-sample (N,) tensor shaped to broadcast against an N-first tensor of ``dims`` dims."""
    return v.reshape(-1, *([1] * (dims - 1)))


def _invert_lut(n: int, device) -> Tensor:
    return 255.0 - _levels(n, device)


def _posterize_lut(bits: Tensor) -> Tensor:
    # PIL keeps the top `bits` bits: i & ~(2**(8 - bits) - 1). bits = 0 keeps
    # none, i.e. black (Pillow 13 raises for 0 bits; timm's inc1 mapping asks
    # for it at magnitude 10). bits >= 8 is the identity, as in timm.
    q = torch.pow(2.0, 8 - bits.clamp(0, 8))
    i = _levels(bits.shape[0], bits.device)
    return torch.floor(i / _col(q, 3)) * _col(q, 3)


def _solarize_lut(thresh: Tensor) -> Tensor:
    i = _levels(thresh.shape[0], thresh.device)
    return torch.where(i < _col(thresh, 3), i, 255.0 - i)


def _solarize_add_lut(add: Tensor, thresh: float = 128) -> Tensor:
    i = _levels(add.shape[0], add.device)
    return torch.where(i < thresh, (i + _col(add, 3)).clamp(max=255), i)


def _brightness_lut(factor: Tensor) -> Tensor:
    # ImageEnhance.Brightness blends with a black image.
    i = _levels(factor.shape[0], factor.device)
    return _blend(torch.zeros_like(i), i, _col(factor, 3))


def _contrast_lut(factor: Tensor, mean: Tensor) -> Tensor:
    # ImageEnhance.Contrast blends with a flat image of the (rounded) mean of
    # the L image; mean: float (N,) integer-valued.
    i = _levels(factor.shape[0], factor.device)
    return _blend(_col(mean, 3).expand_as(i), i, _col(factor, 3))


def _histogram(x: Tensor) -> Tensor:
    """Per (sample, channel) histogram of an integer-valued [0, 255] image: int64 (N, C, 256).
    One scatter_add over the batch, each (n, c) offset into its own 256 bins."""
    n, c, h, w = x.shape
    idx = x.reshape(n * c, h * w).long() + torch.arange(n * c, device=x.device)[:, None] * 256
    hist = torch.zeros(n * c * 256, dtype=torch.int64, device=x.device)
    ones = torch.ones(1, dtype=torch.int64, device=x.device).expand(idx.numel())  # no allocation
    hist.scatter_add_(0, idx.reshape(-1), ones)
    return hist.view(n, c, 256)


def _auto_contrast_lut(hist: Tensor) -> Tensor:
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


def _equalize_lut(hist: Tensor) -> Tensor:
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


def _luma_mean(x: Tensor) -> Tensor:
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
    return apply_lut(x, _invert_lut(x.shape[0], x.device))


def posterize(x: Tensor, bits: Tensor) -> Tensor:
    """Keep the top ``bits`` (N,) bits of each value; 0 bits gives black."""
    return apply_lut(x, _posterize_lut(bits.to(torch.float32)))


def solarize(x: Tensor, thresh: Tensor) -> Tensor:
    """ImageOps.solarize: values >= thresh (N,) are inverted."""
    return apply_lut(x, _solarize_lut(thresh.to(torch.float32)))


def solarize_add(x: Tensor, add: Tensor, thresh: float = 128) -> Tensor:
    """timm's solarize_add: values < thresh get ``add`` (N,) added, clipped to 255."""
    return apply_lut(x, _solarize_add_lut(add.to(torch.float32), thresh))


def auto_contrast(x: Tensor) -> Tensor:
    """ImageOps.autocontrast, per sample and channel."""
    return apply_lut(x, _auto_contrast_lut(_histogram(x)))


def equalize(x: Tensor) -> Tensor:
    """ImageOps.equalize, per sample and channel."""
    return apply_lut(x, _equalize_lut(_histogram(x)))


def brightness(x: Tensor, factor: Tensor) -> Tensor:
    """ImageEnhance.Brightness with a per-sample factor (N,)."""
    return apply_lut(x, _brightness_lut(factor.to(torch.float32)))


def contrast(x: Tensor, factor: Tensor) -> Tensor:
    """ImageEnhance.Contrast with a per-sample factor (N,)."""
    return apply_lut(x, _contrast_lut(factor.to(torch.float32), _luma_mean(x)))


def color(x: Tensor, factor: Tensor) -> Tensor:
    """ImageEnhance.Color (saturation): blend with the L image. Identity for C = 1
    (and for gray RGB images, whose L is the image itself)."""
    if x.shape[1] == 1:
        return x
    return _blend(_luma(x), x, _col(factor.to(torch.float32), 4))


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
    return _blend(degenerate, x, _col(factor.to(torch.float32), 4))


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
    choose per sample; then the 16 bicubic taps are gathered once and the
    bilinear result is made from their inner 4.
    Returns float32 (N, C, H', W').

    All taps come from one gather (the cost on a GPU is the number of
    kernels): edge-replicate padding of 2 stands in for clamping each tap,
    so tap (j, i) of a point sits at a fixed offset from its top-left tap in
    the padded, flattened image. The rows are then combined all at once.
    """
    n, c, h, w = x.shape
    fx, fy = sx - 0.5, sy - 0.5
    x0, y0 = torch.floor(fx), torch.floor(fy)
    dx = (fx - x0).to(x.dtype).reshape(n, 1, 1, -1)
    dy = (fy - y0).to(x.dtype).reshape(n, 1, -1)
    any_cubic = not isinstance(cubic, bool) or cubic
    offsets = (-1, 0, 1, 2) if any_cubic else (0, 1)
    t = len(offsets)
    pw = w + 4
    # Points far outside are clamped first; they get the fill colour anyway.
    x0 = x0.clamp(-1, w - 1)
    y0 = y0.clamp(-1, h - 1)
    base = ((y0 + 2 + offsets[0]) * pw + (x0 + 2 + offsets[0])).long().reshape(n, 1, 1, -1)
    tap = torch.tensor([j * pw + i for j in range(t) for i in range(t)], dtype=torch.int64)
    index = (base + tap.to(x.device, non_blocking=True).view(1, 1, -1, 1)).reshape(n, 1, -1).expand(n, c, -1)
    flat = F.pad(x, (2, 2, 2, 2), mode="replicate").reshape(n, c, (h + 4) * pw)
    taps = flat.gather(2, index).view(n, c, t, t, -1)  # (N, C, row, column, point)
    v = [taps[:, :, :, i] for i in range(t)]  # each (N, C, row, point)

    def lerp(v0: Tensor, v1: Tensor, d: Tensor) -> Tensor:
        return v0 + (v1 - v0) * d

    def cubic_combine(v: list[Tensor], d: Tensor) -> Tensor:
        p2 = v[2] - v[0]
        p3 = 2 * (v[0] - v[1]) + v[2] - v[3]
        p4 = v[1] - v[0] - v[2] + v[3]
        return v[1] + d * (p2 + d * (p3 + d * p4))

    def split_rows(rows: Tensor) -> list[Tensor]:
        return [rows[:, :, j] for j in range(rows.shape[2])]

    inner = (1, 2) if any_cubic else (0, 1)  # the bilinear neighbours among the taps

    def bilinear() -> Tensor:
        rows = lerp(v[inner[0]][:, :, inner[0] : inner[1] + 1], v[inner[1]][:, :, inner[0] : inner[1] + 1], dx)
        return lerp(*split_rows(rows), dy)

    def bicubic() -> Tensor:
        return cubic_combine(split_rows(cubic_combine(v, dx)), dy)

    if isinstance(cubic, bool):
        out = bicubic() if cubic else bilinear()
    else:
        out = torch.where(cubic.view(n, 1, 1), bicubic(), bilinear())
    return out.view(n, c, *sx.shape[1:])


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
    return torch.where(outside, _channels(fill, x.device).view(1, -1, 1, 1), out)


def _affine_matrix(name: str, arg: Tensor, height: int, width: int) -> Tensor:
    if name == "Rotate":
        return rotate_matrix(arg, height, width)
    if name == "ShearX":
        return shear_x_matrix(arg)
    if name == "ShearY":
        return shear_y_matrix(arg)
    if name == "TranslateXRel":
        return translate_x_matrix(arg, width)
    if name == "TranslateYRel":
        return translate_y_matrix(arg, height)
    raise ValueError(name)


@dataclass
class LayerPlan:
    """One RandAugment layer planned on the host: which samples get which op.

    Each sample draws one op (or none). The value-mapping ops whose table
    depends only on the drawn argument are folded into one per-sample table
    ``lut`` here on the host; the others become groups of sample indices, so
    the device works only on the samples that drew them (a sixth of the batch
    draws a geometric op, a thirtieth sharpness) and never has to ask how
    many there are. All tensors are on the host until ``_to_device``.

    * lut: float32 (N, 1, 256), the identity for samples without such an op;
      uses_lut says whether any sample has a non-identity table here or in
      ``stats`` (else the look-up is skipped).
    * stats: (index int64 (k,), factor float32 (k,)) of the samples whose
      table needs the image: first those that drew AutoContrast, then
      Equalize, then Contrast, as many as stats_counts says.
    * affine: cubic (bool) -> (index int64 (k,), matrix float64 (k, 2, 3)).
    * sharpness, color: (index int64 (k,), factor float32 (k,)) or None.
    """

    lut: Tensor
    uses_lut: bool
    stats: tuple[Tensor, Tensor]
    stats_counts: tuple[int, int, int]
    affine: dict[bool, tuple[Tensor, Tensor]]
    sharpness: tuple[Tensor, Tensor] | None
    color: tuple[Tensor, Tensor] | None

    def tensors(self, prefix: str) -> dict[str, Tensor]:
        """The host tensors, flattened under unique names (for _to_device)."""
        out = {f"{prefix}.lut": self.lut}
        out[f"{prefix}.stats.index"], out[f"{prefix}.stats.factor"] = self.stats
        for cubic, (index, matrix) in self.affine.items():
            out[f"{prefix}.affine{int(cubic)}.index"], out[f"{prefix}.affine{int(cubic)}.matrix"] = index, matrix
        for name in ("sharpness", "color"):
            group = getattr(self, name)
            if group is not None:
                out[f"{prefix}.{name}.index"], out[f"{prefix}.{name}.factor"] = group
        return out

    def on(self, moved: dict[str, Tensor], prefix: str) -> "LayerPlan":
        """The same plan with its tensors taken from ``moved`` (their device copies)."""
        def pair(name):
            return moved[f"{prefix}.{name}.index"], moved[f"{prefix}.{name}.factor"]

        return LayerPlan(
            lut=moved[f"{prefix}.lut"],
            uses_lut=self.uses_lut,
            stats=pair("stats"),
            stats_counts=self.stats_counts,
            affine={c: (moved[f"{prefix}.affine{int(c)}.index"], moved[f"{prefix}.affine{int(c)}.matrix"])
                    for c in self.affine},
            sharpness=pair("sharpness") if self.sharpness is not None else None,
            color=pair("color") if self.color is not None else None,
        )


# The value-mapping ops whose table needs the image, in the order of stats_counts.
_STATS_OPS = {"AutoContrast": 0, "Equalize": 1, "Contrast": 2, "ContrastIncreasing": 2}


def plan_rand_augment_layer(
    op: Tensor,
    apply: Tensor,
    magnitude: Tensor,
    sign: Tensor,
    ops: tuple[str, ...],
    height: int,
    width: int,
    channels: int,
    cubic: Tensor | bool = True,
) -> LayerPlan:
    """Turn one layer's draws (host tensors (N,), as sample_rand_augment_layer
    makes them) into a LayerPlan for images of ``channels`` x height x width.
    cubic: bool, or bool (N,) for a per-sample choice of bicubic/bilinear."""
    n = op.shape[0]
    if isinstance(cubic, bool):
        cubic = torch.full((n,), cubic, dtype=torch.bool)
    lut = _levels(n, op.device).clone()
    uses_lut = False
    stats: list[list[tuple[Tensor, Tensor]]] = [[], [], []]
    affine_parts: dict[bool, list[tuple[Tensor, Tensor]]] = {}
    sharpness_group = color_group = None
    for k, name in enumerate(ops):
        chosen = apply & (op == k)
        if not bool(chosen.any()):
            continue
        index = chosen.nonzero().view(-1)
        arg = level_to_arg(name, magnitude[index], sign[index])
        if name in _STATS_OPS:
            stats[_STATS_OPS[name]].append((index, arg))
            uses_lut = True
        elif name in _LUT_OPS:
            if name == "Invert":
                table = _invert_lut(len(index), op.device)
            elif name.startswith("Posterize"):
                table = _posterize_lut(arg)
            elif name.startswith("SolarizeAdd"):
                table = _solarize_add_lut(arg)
            elif name.startswith("Solarize"):
                table = _solarize_lut(arg)
            else:  # Brightness
                table = _brightness_lut(arg)
            lut[index] = table
            uses_lut = True
        elif name in _AFFINE_OPS:
            matrix = _affine_matrix(name, arg, height, width)
            for c in (True, False):
                pick = cubic[index] == c
                if bool(pick.any()):
                    affine_parts.setdefault(c, []).append((index[pick], matrix[pick]))
        elif name in _COLOR_OPS:
            if channels > 1:  # colour is the identity on one grey channel
                color_group = (index, arg)
        elif name in _SHARPNESS_OPS:
            sharpness_group = (index, arg)
        else:
            raise ValueError(f"unknown RandAugment op {name!r}")
    affine_groups = {c: (torch.cat([i for i, _ in parts]), torch.cat([m for _, m in parts]))
                     for c, parts in affine_parts.items()}
    groups = [group for kind in stats for group in kind]
    stats_group = ((torch.cat([i for i, _ in groups]), torch.cat([f for _, f in groups])) if groups
                   else (torch.zeros(0, dtype=torch.int64), torch.zeros(0)))
    stats_counts = tuple(sum(len(i) for i, _ in kind) for kind in stats)
    return LayerPlan(lut, uses_lut, stats_group, stats_counts, affine_groups, sharpness_group, color_group)


def _put(out: Tensor, source: Tensor, index: Tensor, values: Tensor) -> Tensor:
    """out with the samples at ``index`` replaced by ``values``; never writes
    into ``source`` (out starts as source when no op has written yet)."""
    if out is source:
        out = source.clone()
    return out.index_copy_(0, index, values)


def apply_rand_augment_layer(x: Tensor, plan: LayerPlan, fill: tuple[float, ...]) -> Tensor:
    """Apply a planned layer (its tensors on x's device) to x float32 (N, C, H, W)
    of integers in [0, 255]. Every op reads the layer's input x; each sample
    gets one op, so the groups write disjoint samples. No host sync: the
    group sizes are in the plan."""
    n, c = x.shape[:2]
    lut = plan.lut
    autocontrast, equalize, contrast = plan.stats_counts
    if autocontrast + equalize + contrast:
        index, factor = plan.stats
        part = x.index_select(0, index)
        tables = []
        if autocontrast + equalize:
            hist = _histogram(part[: autocontrast + equalize])
            if autocontrast:
                tables.append(_auto_contrast_lut(hist[:autocontrast]))
            if equalize:
                tables.append(_equalize_lut(hist[autocontrast:]))
        if contrast:  # blend with the mean of the L image
            last = autocontrast + equalize
            tables.append(_contrast_lut(factor[last:], _luma_mean(part[last:])).expand(-1, c, -1))
        lut = lut.expand(n, c, 256).clone()
        lut.index_copy_(0, index, tables[0] if len(tables) == 1 else torch.cat(tables))
    out = apply_lut(x, lut) if plan.uses_lut else x
    for cubic, (index, matrix) in plan.affine.items():
        out = _put(out, x, index, affine(x.index_select(0, index), matrix, fill, cubic))
    if plan.color is not None and c > 1:
        index, factor = plan.color
        out = _put(out, x, index, color(x.index_select(0, index), factor))
    if plan.sharpness is not None:
        index, factor = plan.sharpness
        out = _put(out, x, index, sharpness(x.index_select(0, index), factor))
    return out.clone() if out is x else out


def rand_augment_layer(
    x: Tensor,
    op: Tensor,
    apply: Tensor,
    magnitude: Tensor,
    sign: Tensor,
    ops: tuple[str, ...],
    fill: tuple[float, ...],
    cubic: Tensor | bool = True,
) -> Tensor:
    """Apply one RandAugment layer: sample n gets ``ops[op[n]]`` at ``magnitude[n]``
    if ``apply[n]``. x float32 (N, C, H, W) of integers in [0, 255]; the others (N,).

    The draws are brought to the host to plan the layer (a sync where they
    live on a GPU; GpuAugment draws them on the host in the first place).
    """
    n, c, h, w = x.shape
    host = [t.cpu() for t in (op, apply, magnitude, sign)]
    cubic = cubic.cpu() if isinstance(cubic, Tensor) else cubic
    plan = plan_rand_augment_layer(*host, ops, h, w, c, cubic)
    moved = _to_device(plan.tensors("layer"), x.device)
    return apply_rand_augment_layer(x, plan.on(moved, "layer"), fill)


# ---------------------------------------------------------------------------
# 4. Colour jitter (torchvision ColorJitter on PIL images)


def sample_color_jitter(
    batch: int, strength: tuple[float, float, float], generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """torchvision ColorJitter(b, c, s) draws per sample: factors float32 (N, 3) for
    (brightness, contrast, saturation), each ~ U(max(0, 1 - s), 1 + s) (1 where s = 0),
    and the order int64 (N, 3): a uniformly random permutation of (0, 1, 2)
    (torchvision permutes four ops, hue included; with hue off that leaves a
    uniform order of the other three)."""
    lo = _channels([max(0.0, 1 - s) for s in strength], generator.device)
    hi = _channels([1 + s for s in strength], generator.device)
    factors = lo + (hi - lo) * _rand((batch, 3), generator)
    order = _rand((batch, 3), generator).argsort(dim=1)
    return factors, order


def color_jitter(x: Tensor, factors: Tensor, order: Tensor) -> Tensor:
    """Brightness (0), contrast (1), saturation (2) in each sample's order, as
    torchvision's adjust_* do on PIL images (ImageEnhance). x float32 (N, C, H, W)
    of integers in [0, 255]; factors (N, 3); order int64 (N, 3)."""
    for step in range(3):
        which = order[:, step]
        f = factors.gather(1, which[:, None]).squeeze(1)
        # Brightness and contrast are value maps: one table for both.
        lut = torch.where(
            (which == 0)[:, None, None],
            _brightness_lut(f),
            torch.where((which == 1)[:, None, None], _contrast_lut(f, _luma_mean(x)), _levels(x.shape[0], x.device)),
        )
        out = apply_lut(x, lut)
        if x.shape[1] > 1:
            out = torch.where(_col(which == 2, 4), color(x, f), out)
        x = out
    return x


# ---------------------------------------------------------------------------
# 5. Normalise


def normalize(x: Tensor, mean: tuple[float, ...] | Tensor, std: tuple[float, ...] | Tensor) -> Tensor:
    """ToTensor + Normalize: x float (N, C, H, W) in [0, 255] (C = 1 expanded to 3)
    -> float32 (N, 3, H, W) of (x / 255 - mean) / std. mean/std: per-channel
    numbers, or float32 (C,) tensors on x's device (made once by the caller)."""
    m = mean if isinstance(mean, Tensor) else _channels(mean, x.device)
    s = std if isinstance(std, Tensor) else _channels(std, x.device)
    if x.shape[1] == 1:
        x = x.expand(-1, m.shape[0], -1, -1)
    return (x / 255.0 - m.view(1, -1, 1, 1)) / s.view(1, -1, 1, 1)


# ---------------------------------------------------------------------------
# 6. RandomErasing (timm, applied after normalisation)


def sample_erasing_boxes(
    batch: int,
    height: int,
    width: int,
    probability: float,
    generator: torch.Generator,
    min_area: float = 0.02,
    max_area: float = 1 / 3,
    min_aspect: float = 0.3,
    max_aspect: float | None = None,
    min_count: int = 1,
    max_count: int = 1,
    tries: int = 10,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """timm RandomErasing's boxes: (top, left, h, w) int64 (N, max_count) and
    active bool (N, max_count).

    A sample is erased with P = probability; it then gets
    count ~ U{min_count..max_count} boxes, each with the area divided by count,
    and each box keeps the first of ``tries`` draws (area ~ U(min, max),
    log-aspect ~ U) that fits strictly inside (w < W and h < H, as timm); a box
    none of whose draws fits is not erased, as in timm.
    """
    max_aspect = max_aspect or 1 / min_aspect
    k = max(min_count, max_count)
    erase = _rand((batch,), generator) <= probability  # timm skips when random() > p
    if min_count == max_count:
        count = torch.full((batch,), min_count, dtype=torch.int64, device=generator.device)
    else:
        count = _randint_inclusive(min_count, torch.full((batch,), max_count, device=generator.device), generator)
    target_area = _uniform((batch, k, tries), min_area, max_area, generator) * (height * width)
    target_area = target_area / count[:, None, None].to(torch.float32)
    aspect = torch.exp(_uniform((batch, k, tries), math.log(min_aspect), math.log(max_aspect), generator))
    h = torch.round(torch.sqrt(target_area * aspect)).to(torch.int64)
    w = torch.round(torch.sqrt(target_area / aspect)).to(torch.int64)
    fits = (w < width) & (h < height)
    first = fits.to(torch.uint8).argmax(-1, keepdim=True)
    h = h.gather(-1, first).squeeze(-1)
    w = w.gather(-1, first).squeeze(-1)
    slot = torch.arange(k, device=generator.device)[None, :]
    active = erase[:, None] & (slot < count[:, None]) & fits.any(-1)
    h = torch.where(active, h, torch.zeros_like(h))
    w = torch.where(active, w, torch.zeros_like(w))
    top = _randint_inclusive(0, height - h, generator)
    left = _randint_inclusive(0, width - w, generator)
    return top, left, h, w, active


def _box_mask(top: Tensor, left: Tensor, h: Tensor, w: Tensor, height: int, width: int) -> Tensor:
    """Union of boxes (N, K) as a bool mask (N, H, W)."""
    rows = torch.arange(height, device=top.device)
    cols = torch.arange(width, device=top.device)
    in_rows = (rows >= top[..., None]) & (rows < (top + h)[..., None])  # (N, K, H)
    in_cols = (cols >= left[..., None]) & (cols < (left + w)[..., None])  # (N, K, W)
    return (in_rows[..., :, None] & in_cols[..., None, :]).any(1)


def random_erasing(
    x: Tensor,
    top: Tensor,
    left: Tensor,
    h: Tensor,
    w: Tensor,
    generator: torch.Generator,
    mode: str = "pixel",
) -> Tensor:
    """Erase the boxes (N, K) of the normalised x float32 (N, C, H, W).

    mode 'pixel': per-pixel N(0, 1) noise (timm's default here); 'rand': one
    N(0, 1) colour per sample and channel; 'const': 0. In normalised space, as
    timm. The noise is drawn for the whole batch (cheaper on a GPU than
    gathering the boxes; the distribution in each box is the same).
    """
    n, c, height, width = x.shape
    mask = _box_mask(top, left, h, w, height, width)[:, None]
    if mode == "pixel":
        fill = _randn((n, c, height, width), generator)
    elif mode == "rand":
        fill = _randn((n, c, 1, 1), generator)
    elif mode in ("const", ""):
        fill = torch.zeros((1,), device=x.device)
    else:
        raise ValueError(f"unknown random erasing mode {mode!r}")
    return torch.where(mask, fill, x)


# ---------------------------------------------------------------------------
# 7. Mixup / CutMix (timm Mixup, mode='batch')


def _sample_gamma(alpha: float, shape: tuple[int, ...], generator: torch.Generator, tries: int = 16) -> Tensor:
    """Gamma(alpha, 1) samples from the generator (torch's own gamma sampler takes
    none): Marsaglia & Tsang's method, with ``tries`` proposals drawn at once and the
    first accepted kept (each is accepted with P > 0.95, so all failing has
    P < 1e-20; then the first proposal is used). alpha < 1 via
    Gamma(alpha + 1) * U ** (1 / alpha). float64, shape."""
    boost = alpha < 1
    a = alpha + 1 if boost else alpha
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    z = _randn((*shape, tries), generator, dtype=torch.float64)
    u = _rand((*shape, tries), generator, dtype=torch.float64)
    v = (1 + c * z) ** 3
    accept = (v > 0) & (torch.log(u) < 0.5 * z * z + d - d * v + d * torch.log(v.clamp(min=1e-300)))
    first = accept.to(torch.uint8).argmax(-1, keepdim=True)
    g = d * v.gather(-1, first).squeeze(-1).clamp(min=0)
    if boost:
        g = g * _rand(shape, generator, dtype=torch.float64) ** (1.0 / alpha)
    return g


def sample_beta(alpha: float, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    """Beta(alpha, alpha) float64 samples from the generator, via two gammas."""
    g1 = _sample_gamma(alpha, shape, generator)
    g2 = _sample_gamma(alpha, shape, generator)
    return g1 / (g1 + g2).clamp(min=1e-300)


def sample_mix_params(
    mixup_alpha: float,
    cutmix_alpha: float,
    mix_prob: float,
    switch_prob: float,
    generator: torch.Generator,
    shape: tuple[int, ...] = (),
) -> tuple[Tensor, Tensor]:
    """timm ``Mixup._params_per_batch``: ``(lam, use_cutmix)``, float32 and bool
    tensors of ``shape`` (() for one batch; more to draw many at once) on the
    generator's device, so nothing waits for the host. lam = 1 and
    use_cutmix = False where the batch is not mixed (P = 1 - mix_prob)."""
    device = generator.device
    u = _rand((2, *shape), generator)
    mix = u[0] < mix_prob
    if mixup_alpha > 0 and cutmix_alpha > 0:
        use_cutmix = u[1] < switch_prob
        lam = torch.where(
            use_cutmix, sample_beta(cutmix_alpha, shape, generator), sample_beta(mixup_alpha, shape, generator)
        )
    elif mixup_alpha > 0:
        use_cutmix = torch.zeros(shape, dtype=torch.bool, device=device)
        lam = sample_beta(mixup_alpha, shape, generator)
    elif cutmix_alpha > 0:
        use_cutmix = torch.ones(shape, dtype=torch.bool, device=device)
        lam = sample_beta(cutmix_alpha, shape, generator)
    else:
        return torch.ones(shape, device=device), torch.zeros(shape, dtype=torch.bool, device=device)
    lam = torch.where(mix, lam.to(torch.float32), torch.ones(shape, device=device))
    return lam, use_cutmix & mix


def sample_cutmix_box(
    lam: Tensor, height: int, width: int, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """timm's ``rand_bbox`` + lambda correction: a box of sides
    int(H * sqrt(1 - lam)) x int(W * sqrt(1 - lam)) centred at a uniform pixel,
    clipped to the image. Returns int64 (yl, yh, xl, xh) and the corrected
    lam = 1 - box area / image area (float32), each of lam's shape."""
    ratio = torch.sqrt((1 - lam.to(torch.float64)).clamp(min=0))
    cut_h = torch.floor(height * ratio).to(torch.int64)
    cut_w = torch.floor(width * ratio).to(torch.int64)
    u = _rand((2, *lam.shape), generator, dtype=torch.float64)
    cy = torch.floor(u[0] * height).to(torch.int64).clamp(max=height - 1)
    cx = torch.floor(u[1] * width).to(torch.int64).clamp(max=width - 1)
    yl = (cy - cut_h // 2).clamp(0, height)
    yh = (cy + (cut_h + 1) // 2).clamp(0, height)
    xl = (cx - cut_w // 2).clamp(0, width)
    xh = (cx + (cut_w + 1) // 2).clamp(0, width)
    lam_box = 1.0 - ((yh - yl) * (xh - xl)).to(torch.float32) / float(height * width)
    return yl, yh, xl, xh, lam_box


def mix_choice(lam: Tensor, use_cutmix: Tensor, box: tuple[Tensor, ...], lam_box: Tensor
               ) -> tuple[str, float, tuple[int, int, int, int]]:
    """Host draws (from sample_mix_params / sample_cutmix_box, 0-d CPU tensors)
    -> (mode "none" | "mixup" | "cutmix", the targets' lam as a float
    (box-corrected for CutMix, 1.0 when not mixed), the CutMix box (y0, y1, x0, x1))."""
    if bool(use_cutmix):
        return "cutmix", float(lam_box), tuple(int(v) for v in box)
    if float(lam) < 1.0:
        return "mixup", float(lam), (0, 0, 0, 0)
    return "none", 1.0, (0, 0, 0, 0)


def mix_batch(x: Tensor, mode: str, lam: float, box: tuple[int, int, int, int]) -> Tensor:
    """Mix the batch x (N, C, H, W) with its reverse (x.flip(0)), as timm's
    ``Mixup._mix_batch``: "mixup" is ``lam * x + (1 - lam) * flipped``,
    "cutmix" pastes the box (y0, y1, x0, x1) from flipped, "none" returns x.
    The choice is made on the host (mix_choice), so only one is computed."""
    if mode == "cutmix":
        y0, y1, x0, x1 = box
        out = x.clone()
        out[:, :, y0:y1, x0:x1] = x.flip(0)[:, :, y0:y1, x0:x1]
        return out
    if mode == "mixup":
        return x * lam + x.flip(0) * (1.0 - lam)
    if mode == "none":
        return x
    raise ValueError(f"unknown mix mode {mode!r}")


def smoothed_targets(targets: Tensor, num_classes: int, lam: Tensor | float, smoothing: float) -> Tensor:
    """timm's ``mixup_target``: smoothed one-hot (off = s / K, on = 1 - s + s / K)
    mixed with its reverse by lam. targets int64 (N,) -> float32 (N, K)."""
    off = smoothing / num_classes
    on = 1.0 - smoothing + off
    y = torch.full((targets.shape[0], num_classes), off, device=targets.device, dtype=torch.float32)
    y.scatter_(1, targets.long().view(-1, 1), on)
    return y * lam + y.flip(0) * (1.0 - lam)


# ---------------------------------------------------------------------------
# The whole recipe: every per-sample choice is drawn on the host, the pixels
# are worked on the device.


GENERATOR_ON_HOST = True  # GpuAugment takes a CPU generator (see GpuAugment)

_ALIGN = 8  # bytes: the largest element size packed by _pack


def _pack(tensors: dict[str, Tensor], pin: bool = False) -> tuple[Tensor, list[tuple[str, int, int, torch.dtype, tuple]]]:
    """Host tensors -> one uint8 buffer (pinned if asked) and its layout
    [(name, byte offset, byte length, dtype, shape)]; each tensor starts on an
    8-byte boundary, so that it can be viewed back as its dtype."""
    layout, offset = [], 0
    for name, tensor in tensors.items():
        offset = -(-offset // _ALIGN) * _ALIGN
        nbytes = tensor.numel() * tensor.element_size()
        layout.append((name, offset, nbytes, tensor.dtype, tuple(tensor.shape)))
        offset += nbytes
    buffer = torch.empty(max(offset, 1), dtype=torch.uint8, pin_memory=pin)
    for (_, start, nbytes, dtype, _), tensor in zip(layout, tensors.values()):
        buffer[start : start + nbytes].view(dtype).copy_(tensor.reshape(-1))
    return buffer, layout


def _unpack(buffer: Tensor, layout: list[tuple[str, int, int, torch.dtype, tuple]]) -> dict[str, Tensor]:
    """The tensors of a _pack layout, as views of ``buffer`` (wherever it lives)."""
    return {name: buffer[start : start + nbytes].view(dtype).view(shape)
            for name, start, nbytes, dtype, shape in layout}


def _to_device(tensors: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """The host tensors' copies on ``device`` (same names, shapes, dtypes), moved
    in one copy: packed into one pinned byte buffer, sent with
    ``non_blocking=True`` (the host does not wait; the caching host allocator
    keeps the buffer until the copy is done), and viewed back on the device
    (views cost no kernel). On the CPU the tensors are returned as they are."""
    if device.type == "cpu":
        return dict(tensors)
    buffer, layout = _pack(tensors, pin=device.type == "cuda")
    return _unpack(buffer.to(device, non_blocking=True), layout)


@dataclass
class AugmentPlan:
    """One batch's per-sample choices, drawn on the host by ``GpuAugment.plan``.

    ``tensors`` holds every host tensor the device needs (moved in one copy);
    the other fields are plain Python numbers that decide which kernels run,
    so the device never has to report anything back.

    Crop (names ``crop.*``): samples are resized in two groups, those PIL
    resizes horizontally first and those it resizes vertically first
    (``rows_first`` of them, listed first by the permutation ``crop.perm``,
    int64 (N,); ``crop.inverse`` restores the order). ``crop.start``,
    ``crop.length`` int64 (2N,), ``crop.cubic``, ``crop.reverse`` bool (2N,):
    the x-axis windows of the permuted samples, then their y-axis windows;
    ``reverse`` is the flip of that axis.
    """

    tensors: dict[str, Tensor]
    batch: int
    rows_first: int
    layers: list[LayerPlan]
    jitter: bool  # colour jitter (``jitter.factors`` (N, 3), ``jitter.order`` (N, 3))
    erase: bool  # any sample erased (``erase.top/left/h/w`` int64 (N, K))
    mix: str  # "none", "mixup" or "cutmix"
    lam: float  # the targets' mixing weight (box-corrected for CutMix)
    box: tuple[int, int, int, int]  # CutMix (y0, y1, x0, x1)
    noise_seed: int  # seeds the device generator of the erasing noise


class GpuAugment:
    """timm's training augmentation + Mixup for a batch of uint8 images on a device.

    ``GpuAugment(recipe, num_classes, device)(images, targets, generator)``:

    * images: uint8 (B, H, W) or (B, C, H, W), C in {1, 3}, on ``device``;
      grayscale is expanded to 3 channels.
    * targets: int64 (B,) class indices, on ``device``.
    * generator: a CPU ``torch.Generator``, the only source of randomness.
      Every per-sample choice (crop boxes, flips, RandAugment ops and
      magnitudes, erasing boxes, Mixup/CutMix) is drawn from it on the host,
      where they are a few kilobytes, and sent to the device in one copy;
      the per-pixel erasing noise is drawn on the device from a generator
      seeded by it. Knowing every choice on the host lets the device work only
      on the samples an op applies to, without ever waiting for the device.
      Under DDP give each rank its own seed (e.g. seed + rank).

    Returns ``(x, y)``: x float32 (B, 3, S, S), S = recipe.input_size,
    normalised by recipe.mean/std; y float32 (B, num_classes) soft targets
    (label-smoothed one-hot, mixed when recipe.mixes).

    The order is timm's: RandomResizedCrop (or, with recipe.crop off, the
    whole image resized) -> h/v flips -> RandAugment -> ColorJitter (only
    without auto_augment, as timm's transforms_imagenet_train, which turns
    colour jitter off when an auto-augment policy other than '3a' is set) ->
    normalise -> RandomErasing -> Mixup/CutMix over the batch.
    ``plan`` and ``apply`` are the two halves of a call.
    """

    def __init__(self, recipe: AugmentRecipe, num_classes: int, device: torch.device | str):
        self.recipe = recipe
        self.num_classes = int(num_classes)
        self.device = torch.device(device)
        self.size = int(recipe.input_size)
        # timm's hparams['img_mean'], the fill of the geometric ops.
        self.fill = tuple(float(min(255, round(255 * m))) for m in recipe.mean)
        self.rand_augment = parse_rand_augment(recipe.auto_augment) if recipe.auto_augment else None
        # timm: disable_color_jitter = not (force_color_jitter or '3a' in auto_augment).
        jitter_off = bool(recipe.auto_augment) and "3a" not in recipe.auto_augment
        cj = recipe.color_jitter
        if jitter_off or cj is None:
            self.color_jitter = None
        else:
            strength = (float(cj),) * 3 if isinstance(cj, (int, float)) else tuple(float(v) for v in cj[:3])
            self.color_jitter = strength if any(s > 0 for s in strength) else None
        if recipe.interpolation not in ("bicubic", "bilinear", "random"):
            raise ValueError(f"interpolation {recipe.interpolation!r} is not supported on the GPU path")
        self.interpolation = recipe.interpolation
        self._constants: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def _cubic(self, batch: int, generator: torch.Generator) -> Tensor:
        """Bicubic (True) or bilinear per sample: bool (batch,); 'random' is
        timm's per-call coin flip, per sample."""
        if self.interpolation == "random":
            return _rand((batch,), generator) < 0.5
        return torch.full((batch,), self.interpolation == "bicubic", dtype=torch.bool)

    def _channels_after_expand(self, channels: int) -> int:
        # One channel stands for three identical ones only if the fill agrees.
        return 3 if channels == 1 and len(set(self.fill)) > 1 else channels

    def _check(self, images: Tensor, targets: Tensor, generator: torch.Generator) -> Tensor:
        if images.dtype != torch.uint8:
            raise TypeError(f"images must be uint8, got {images.dtype}")
        if images.dim() == 3:
            images = images[:, None]
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must be (B, H, W) or (B, C, H, W) with C in (1, 3), got {tuple(images.shape)}")
        if generator.device.type != "cpu":
            raise ValueError(f"generator must be a CPU torch.Generator (the choices are drawn on the host), "
                             f"got one on {generator.device}")
        if targets.shape != images.shape[:1]:
            raise ValueError(f"targets must be ({images.shape[0]},), got {tuple(targets.shape)}")
        return images

    def __call__(self, images: Tensor, targets: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        images = self._check(images, targets, generator)
        return self.apply(images, targets, self.plan(tuple(images.shape), generator))

    # -- host: draw every choice ------------------------------------------------

    def plan(self, shape: tuple[int, int, int, int], generator: torch.Generator) -> AugmentPlan:
        """Draw one batch's choices for images of ``shape`` (B, C, H, W) from the
        CPU ``generator``. Pure host work on tensors of a few thousand elements."""
        r, s = self.recipe, self.size
        b, c, height, width = shape
        tensors: dict[str, Tensor] = {}

        if r.crop:
            top, left, h, w = sample_crop_boxes(b, height, width, r.scale, r.ratio, generator)
        else:
            zero = torch.zeros(b, dtype=torch.int64)
            top, left, h, w = zero, zero, zero + height, zero + width
        cubic = self._cubic(b, generator)
        hflip, vflip = sample_flips(b, r.hflip, r.vflip, generator)
        vertical_first = resize_order(h, w, s)
        perm = torch.argsort(vertical_first.to(torch.uint8), stable=True)
        tensors["crop.perm"] = perm
        tensors["crop.inverse"] = torch.argsort(perm)
        tensors["crop.start"] = torch.cat([left[perm], top[perm]])
        tensors["crop.length"] = torch.cat([w[perm], h[perm]])
        tensors["crop.cubic"] = torch.cat([cubic[perm], cubic[perm]])
        tensors["crop.reverse"] = torch.cat([hflip[perm], vflip[perm]])
        rows_first = b - int(vertical_first.sum())

        layers = []
        if self.rand_augment is not None:
            channels = self._channels_after_expand(c)
            for k in range(self.rand_augment.num_layers):
                op, apply, magnitude, sign = sample_rand_augment_layer(b, self.rand_augment, generator)
                layer = plan_rand_augment_layer(op, apply, magnitude, sign, self.rand_augment.ops, s, s,
                                                channels, self._cubic(b, generator))
                tensors.update(layer.tensors(f"layer{k}"))
                layers.append(layer)

        jitter = self.color_jitter is not None
        if jitter:
            tensors["jitter.factors"], tensors["jitter.order"] = sample_color_jitter(b, self.color_jitter, generator)

        erase = False
        if r.reprob > 0:
            top, left, h, w, active = sample_erasing_boxes(b, s, s, r.reprob, generator, max_count=r.recount)
            erase = bool(active.any())
            tensors.update({"erase.top": top, "erase.left": left, "erase.h": h, "erase.w": w})

        mix, lam, box = "none", 1.0, (0, 0, 0, 0)
        if r.mixes:
            lam_t, use_cutmix = sample_mix_params(r.mixup_alpha, r.cutmix_alpha, r.mix_prob, r.switch_prob, generator)
            *box_t, lam_box = sample_cutmix_box(lam_t, s, s, generator)
            mix, lam, box = mix_choice(lam_t, use_cutmix, tuple(box_t), lam_box)
        noise_seed = int(torch.randint(2**62, (), generator=generator))
        return AugmentPlan(tensors, b, rows_first, layers, jitter, erase, mix, lam, box, noise_seed)

    # -- device: work the pixels ------------------------------------------------

    def _normalize(self, x: Tensor) -> Tensor:
        """normalize() with mean/std tensors made once per device."""
        if x.device not in self._constants:
            self._constants[x.device] = tuple(torch.tensor(v, dtype=torch.float32).to(x.device)
                                              for v in (self.recipe.mean, self.recipe.std))
        return normalize(x, *self._constants[x.device])

    def _crop(self, images: Tensor, plan: AugmentPlan, dev: dict[str, Tensor]) -> Tensor:
        """RandomResizedCrop + flips (folded into the resize matrices):
        uint8 (B, C, H, W) -> float32 (B, C', S, S) of integers."""
        b, c, height, width = images.shape
        s, k = self.size, plan.rows_first
        if 0 < k < b:
            images = images.index_select(0, dev["crop.perm"])
        x = images.to(torch.float32)
        if self._channels_after_expand(c) != c:
            x = x.expand(-1, 3, -1, -1)
        start, length, cubic, reverse = (dev[f"crop.{n}"] for n in ("start", "length", "cubic", "reverse"))
        if height == width:  # both axes in one call
            weights = _resample_weights(start, length, width, s, cubic, reverse)
            wx, wy = weights[:b, None], weights[b:, None]
        else:
            wx = _resample_weights(start[:b], length[:b], width, s, cubic[:b], reverse[:b])[:, None]
            wy = _resample_weights(start[b:], length[b:], height, s, cubic[b:], reverse[b:])[:, None]

        out = _two_pass_resize(x, wx, wy, k)
        return out.index_select(0, dev["crop.inverse"]) if 0 < k < b else out

    def apply(self, images: Tensor, targets: Tensor, plan: AugmentPlan) -> tuple[Tensor, Tensor]:
        """Augment ``images`` uint8 (B, C, H, W) on their device as ``plan`` says."""
        r = self.recipe
        if images.dim() == 3:
            images = images[:, None]
        dev = _to_device(plan.tensors, images.device)

        x = self._crop(images, plan, dev)
        fill = self.fill if x.shape[1] == 3 else self.fill[:1]
        for k, layer in enumerate(plan.layers):
            x = apply_rand_augment_layer(x, layer.on(dev, f"layer{k}"), fill)
        if plan.jitter:
            x = color_jitter(x, dev["jitter.factors"], dev["jitter.order"])

        x = self._normalize(x)

        if plan.erase:
            noise = torch.Generator(device=x.device).manual_seed(plan.noise_seed)
            boxes = (dev[f"erase.{n}"] for n in ("top", "left", "h", "w"))
            x = random_erasing(x, *boxes, noise, mode=r.remode)

        x = mix_batch(x, plan.mix, plan.lam, plan.box)
        y = smoothed_targets(targets, self.num_classes, plan.lam, r.label_smoothing)
        return x.contiguous(), y
