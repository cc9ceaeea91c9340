"""The static layout: one batch's augmentation as the same kernels on the
same shapes for every batch.

Why: the op-by-op layout (AugmentPlan) runs each op on just the samples
that drew it, which keeps the device work small but makes the host launch a
different set of kernels, on different shapes, every batch: several ms of
host time per batch, which a fast model's training step cannot hide (the
host can spend more time launching the augmentation than the device running
it), and a
compiled version specialises on the group sizes (recompiling for hundreds of
steps). Here every shape depends only on the batch size and the recipe, so
the device half compiles once (``fuse``) and can be captured as one CUDA
graph (graphs.py) that the host replays for a few microseconds.

How each stage keeps its shapes (same results as the op-by-op layout up to
float rounding, tested):

* crop: the samples PIL resizes vertically first are transposed (square
  images only), so one horizontal-then-vertical pass pair serves all (a
  vertical-first resize is the transpose of a horizontal-first resize of
  the transpose), and transposed back.
* RandAugment layer: each sample draws one op, so the others can run as
  identities on it: a per-sample look-up table (the identity where no value
  op was drawn; every kind of table built on the device for every sample
  from its op and argument, and picked per sample), sharpness and colour
  with factor 1, and the geometric ops on a fixed number of slots (``affine_slots``: a bound the
  count exceeds with probability < 1e-9; the drawn samples, then spare ones
  with the identity matrix, which resamples a pixel to itself exactly); the
  ops that read image statistics (a histogram, a mean) likewise on
  ``stats_slots``, the spare slots keeping their table. A batch over a
  bound is laid out op by op instead (plan returns None).
* erasing: boxes of size 0 for the samples not erased; CutMix/Mixup: one
  blend with the reversed batch whose weight is lam (Mixup), 0 inside the
  box and 1 outside (CutMix), 1 (neither).

Tensors of a StaticPlan (B the batch, K the erasing boxes per sample, A the
slots): ``crop.start``, ``crop.length`` int64 (2B,), ``crop.reverse`` bool
(2B,) (the first pass's window and flip for each sample, then the
second's), ``crop.cubic`` bool (2B,) ('random' interpolation only),
``crop.transpose`` bool (B,); per layer k, ``layer{k}.value.op`` int64
(B,) (0, or 1 + the VALUE_OPS index) and ``layer{k}.value.arg`` float32
(B,), ``layer{k}.sharpness``, ``layer{k}.color`` float32 (B,),
``layer{k}.stats.index`` int64 (T,) (T the statistics ops' slots),
``layer{k}.stats.kind`` int64 (T,) (0, or 1 + AutoContrast / Equalize /
Contrast), ``layer{k}.stats.contrast`` float32 (T,), ``layer{k}.affine.index`` int64 (A,),
``layer{k}.affine.matrix`` float64 (A, 2, 3), ``layer{k}.affine.cubic``
bool (A,); ``jitter.factors`` / ``jitter.order`` (colour jitter only);
``erase.top/left/h/w`` int64 (B, K) (erasing only); ``mix.weight`` float32
0-d, ``mix.box`` int64 (4,), ``mix.lam`` float32 0-d (the targets');
``noise.seed`` int64 0-d.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
import torch
from torch import Tensor

from ..recipe import AugmentRecipe
from . import fusion
from .color_jitter import color_jitter
from .crop import tf32_matmuls, two_pass_resize, axis_weights, resize_order
from .erasing import random_erasing
from .geometric import affine
from .mixing import smoothed_targets
from .pixel_ops import (auto_contrast_lut, brightness_lut, contrast_lut, equalize_lut, channel_histogram, invert_lut,
                        lut_levels, luma_mean, posterize_lut, solarize_add_lut, solarize_lut, apply_lut, color,
                        normalize, sharpness)
from .plans import BatchDraws, StaticPlan
from .rand_augment import (AFFINE_OPS, COLOR_OPS, LUT_OPS, SHARPNESS_OPS, STATS_OPS, RandAugmentConfig,
                           affine_matrix, level_to_arg)
from .transfer import pack


def _op_slots(batch: int, cfg: RandAugmentConfig, kinds) -> int:
    """Slots per layer for the ops named in ``kinds``: the mean count of
    samples that draw one plus 6 standard deviations (binomial; exceeded
    with P < 1e-9), plus 4, rounded up to a multiple of 8 and at most the batch."""
    p = cfg.prob * sum(op in kinds for op in cfg.ops) / len(cfg.ops)
    if p == 0:
        return 0
    bound = batch * p + 6 * math.sqrt(batch * p * (1 - p)) + 4
    return min(batch, -(-math.ceil(bound) // 8) * 8)


def affine_slots(batch: int, cfg: RandAugmentConfig) -> int:
    """Slots for the geometric ops per layer (their resampling is the layer's dearest work)."""
    return _op_slots(batch, cfg, AFFINE_OPS)


def stats_slots(batch: int, cfg: RandAugmentConfig) -> int:
    """Slots for the ops that read image statistics (AutoContrast, Equalize:
    a histogram; Contrast: the mean) per layer: a histogram of every sample
    can cost more than the rest of a layer (its atomic adds contend)."""
    return _op_slots(batch, cfg, STATS_OPS)


# -- host: lay the draws out ---------------------------------------------------

# The value-mapping ops whose table depends on their argument alone: the
# device builds their tables from (op, argument) pairs, so a plan carries a
# few numbers per sample instead of 256 (a plan is received and copied on
# the training thread every step).
VALUE_OPS = ("Invert", "Posterize", "SolarizeAdd", "Solarize", "Brightness")  # SolarizeAdd before Solarize


def _value_op(name: str) -> int:
    """VALUE_OPS index of a RandAugment op name (the *Increasing variants map to their base)."""
    for k, prefix in enumerate(VALUE_OPS):
        if name.startswith(prefix):
            return k
    raise ValueError(f"{name!r} has no argument-only table")


def _value_tables(op: Tensor, arg: Tensor) -> Tensor:
    """The per-sample tables float32 (N, 1, 256) of op int64 (N,) (VALUE_OPS
    index + 1, 0 for the identity) at arg float32 (N,): value_table's, every
    kind computed for every sample and picked per sample."""
    n = op.shape[0]
    pick = op.view(n, 1, 1)
    tables = (invert_lut(n, op.device), posterize_lut(arg), solarize_add_lut(arg), solarize_lut(arg),
              brightness_lut(arg))
    lut = lut_levels(n, op.device)
    for k, table in enumerate(tables):
        lut = torch.where(pick == k + 1, table, lut)
    return lut



def _slotted(drawn: Tensor, slots: int) -> Tensor | None:
    """The indices int64 (slots,) of the samples where ``drawn`` (bool (B,)),
    then of others (whose op is the identity) to fill the slots; None when
    more samples drew than there are slots. As many slots as samples: every
    sample in order (the device then skips the gather and scatter)."""
    if slots >= drawn.numel():
        return torch.arange(drawn.numel())
    chosen = drawn.nonzero().view(-1)
    if chosen.numel() > slots:
        return None
    return torch.cat([chosen, (~drawn).nonzero().view(-1)[: slots - chosen.numel()]])


def _plan_layer(op: Tensor, apply: Tensor, magnitude: Tensor, sign: Tensor, cubic: Tensor | bool,
                ops: tuple[str, ...], size: int, slots: int, stat_slots: int) -> dict[str, Tensor] | None:
    """One RandAugment layer's draws (B,) as the static layer's tensors (see
    the module docstring), or None when more samples drew a geometric op (or
    a statistics op) than there are slots."""
    n = op.shape[0]
    if isinstance(cubic, bool):
        cubic = torch.full((n,), cubic, dtype=torch.bool)
    value_op = torch.zeros(n, dtype=torch.int64)  # VALUE_OPS index + 1; 0: the identity table
    value_arg = torch.zeros(n)
    stats = torch.zeros(n, dtype=torch.int64)
    factors = {name: torch.ones(n) for name in ("contrast", "sharpness", "color")}
    matrix = torch.eye(2, 3, dtype=torch.float64).repeat(n, 1, 1)
    geometric = torch.zeros(n, dtype=torch.bool)
    drawn = torch.where(apply, op, len(ops))
    for k, name in enumerate(ops):
        index = (drawn == k).nonzero().view(-1)
        if index.numel() == 0:
            continue
        arg = level_to_arg(name, magnitude[index], sign[index])
        if name in STATS_OPS:
            stats[index] = STATS_OPS[name] + 1
            factors["contrast"][index] = arg
        elif name in LUT_OPS:
            value_op[index] = _value_op(name) + 1
            value_arg[index] = arg
        elif name in AFFINE_OPS:
            matrix[index] = affine_matrix(name, arg, size, size)
            geometric[index] = True
        elif name in COLOR_OPS:
            factors["color"][index] = arg
        elif name in SHARPNESS_OPS:
            factors["sharpness"][index] = arg
        else:
            raise ValueError(f"unknown RandAugment op {name!r}")
    index = _slotted(geometric, slots)  # the spare slots resample with the identity matrix
    stats_index = _slotted(stats > 0, stat_slots)  # the spare slots keep their table
    if index is None or stats_index is None:
        return None
    contrast = factors.pop("contrast")
    return {"value.op": value_op, "value.arg": value_arg, **factors,
            "stats.index": stats_index, "stats.kind": stats[stats_index], "stats.contrast": contrast[stats_index],
            "affine.index": index, "affine.matrix": matrix[index], "affine.cubic": cubic[index]}


def plan(d: BatchDraws, size: int, rand_augment: RandAugmentConfig | None) -> StaticPlan | None:
    """The draws as a StaticPlan for output images ``size`` x ``size`` and the
    run's RandAugment (None: none), or None where the static layout cannot
    hold this batch (non-square images; more geometric ops than slots)."""
    b, c, height, width = d.shape
    if height != width:
        return None
    top, left, h, w = d.crop
    t: dict[str, Tensor] = {}
    transpose = resize_order(h, w, size)

    def first_then_second(x_axis: Tensor, y_axis: Tensor) -> Tensor:
        # The first pass runs along the (possibly transposed) image's rows.
        return torch.cat([torch.where(transpose, y_axis, x_axis), torch.where(transpose, x_axis, y_axis)])

    t["crop.start"] = first_then_second(left, top)
    t["crop.length"] = first_then_second(w, h)
    t["crop.reverse"] = first_then_second(d.hflip, d.vflip)
    if isinstance(d.cubic, Tensor):
        t["crop.cubic"] = torch.cat([d.cubic, d.cubic])
    t["crop.transpose"] = transpose
    if d.layers:
        cfg = rand_augment
        slots, stat_slots = affine_slots(b, cfg), stats_slots(b, cfg)
        for k, (op, apply, magnitude, sign, cubic) in enumerate(d.layers):
            layer = _plan_layer(op, apply, magnitude, sign, cubic, cfg.ops, size, slots, stat_slots)
            if layer is None:
                return None
            t.update({f"layer{k}.{name}": v for name, v in layer.items()})
    if d.jitter is not None:
        t["jitter.factors"], t["jitter.order"] = d.jitter
    if d.erase is not None:
        t.update({f"erase.{n}": v for n, v in zip(("top", "left", "h", "w"), d.erase[:4])})
    t["mix.weight"] = torch.tensor(d.lam if d.mix == "mixup" else 1.0, dtype=torch.float32)
    t["mix.box"] = torch.tensor(d.box if d.mix == "cutmix" else (0, 0, 0, 0), dtype=torch.int64)
    t["mix.lam"] = torch.tensor(d.lam, dtype=torch.float32)
    t["noise.seed"] = torch.tensor(d.noise_seed, dtype=torch.int64)
    buffer, layout = pack(t)
    key = (tuple(d.shape), tuple((name, dtype, shape) for name, _, _, dtype, shape in layout))
    return StaticPlan(buffer, layout, key)


# -- device: the same kernels for every batch -------------------------------------


@dataclass(frozen=True)
class StaticConfig:
    """Everything the device half needs besides the tensors: plain values,
    fixed for a run (a compiled version specialises on them)."""

    size: int
    expand_to_rgb: bool  # grayscale expanded to RGB after the crop (the fill differs by channel)
    cubic: bool  # the crop's interpolation when not per sample
    precision: str
    fill: tuple[float, ...]
    layers: int
    stats: bool  # the ops include AutoContrast, Equalize or Contrast
    geometric: bool
    sharpness: bool
    color: bool
    jitter: bool
    erase_mode: str | None  # None: no erasing
    mixes: bool
    num_classes: int
    smoothing: float

    @classmethod
    def of(cls, recipe: AugmentRecipe, rand_augment: RandAugmentConfig | None, *, size: int, expand_to_rgb: bool,
           precision: str, fill: tuple[float, ...], jitter: bool, num_classes: int) -> "StaticConfig":
        """The configuration of a run of ``recipe`` with its parsed ``rand_augment``
        (None: none) and the values GpuAugment resolved from it."""
        ops = rand_augment.ops if rand_augment else ()
        return cls(
            size=size, expand_to_rgb=expand_to_rgb, cubic=recipe.interpolation == "bicubic", precision=precision,
            fill=fill, layers=rand_augment.num_layers if ops else 0,
            stats=any(op in STATS_OPS for op in ops), geometric=any(op in AFFINE_OPS for op in ops),
            sharpness=any(op in SHARPNESS_OPS for op in ops), color=any(op in COLOR_OPS for op in ops),
            jitter=jitter, erase_mode=recipe.remode if recipe.reprob > 0 else None, mixes=recipe.mixes,
            num_classes=num_classes, smoothing=recipe.label_smoothing)


def _crop(cfg: StaticConfig, images: Tensor, t: dict[str, Tensor]) -> Tensor:
    """uint8 (B, C, H, H) -> float32 (B, C', S, S) of integers: every sample
    horizontal pass first, on its transpose where PIL goes vertical first."""
    b, c, _, width = images.shape
    transpose = t["crop.transpose"].view(-1, 1, 1, 1)
    x = torch.where(transpose, images.transpose(2, 3), images)
    cubic = t.get("crop.cubic", cfg.cubic)
    weights = axis_weights(t["crop.start"], t["crop.length"], width, cfg.size, cubic, t["crop.reverse"],
                           cfg.precision)
    first, second = [m[:b, None] for m in weights], [m[b:, None] for m in weights]
    out = two_pass_resize(x, first, second, rows_first=b, switch_tf32=False)
    out = torch.where(transpose, out.transpose(2, 3), out)
    # Grayscale becomes RGB after the crop (which treats channels alike): a
    # third of the crop's work. A view: nothing below writes in place.
    return out.expand(-1, 3, -1, -1) if cfg.expand_to_rgb and c == 1 else out


def _layer(cfg: StaticConfig, x: Tensor, t: dict[str, Tensor], prefix: str) -> Tensor:
    """One RandAugment layer on every sample (identities where not drawn)."""
    n, c = x.shape[:2]
    lut = _value_tables(t[f"{prefix}.value.op"], t[f"{prefix}.value.arg"]).expand(n, c, 256)
    if cfg.stats:
        # The statistics ops' tables, for the samples in their slots only
        # (the spare slots' kind is 0: their table is written back as it was).
        index = t[f"{prefix}.stats.index"]
        every = index.shape[0] == n  # then the slots are the samples in order
        kind = t[f"{prefix}.stats.kind"].view(-1, 1, 1)
        part = x if every else x.index_select(0, index)
        hist = channel_histogram(part)
        tables = lut if every else lut.index_select(0, index)
        tables = torch.where(kind == 1, auto_contrast_lut(hist), tables)
        tables = torch.where(kind == 2, equalize_lut(hist), tables)
        contrast = contrast_lut(t[f"{prefix}.stats.contrast"], luma_mean(part)).expand(-1, c, 256)
        tables = torch.where(kind == 3, contrast, tables)
        lut = tables if every else lut.contiguous().index_copy(0, index, tables)
    y = apply_lut(x, lut)
    if cfg.sharpness:
        y = sharpness(y, t[f"{prefix}.sharpness"])
    if cfg.color and c > 1:
        y = color(y, t[f"{prefix}.color"])
    if cfg.geometric:
        index = t[f"{prefix}.affine.index"]
        fill = cfg.fill if c == 3 else cfg.fill[:1]
        every = index.shape[0] == n  # then the slots are the samples in order
        moved = affine(y if every else y.index_select(0, index), t[f"{prefix}.affine.matrix"], fill,
                       t[f"{prefix}.affine.cubic"])
        y = moved if every else y.index_copy(0, index, moved)
    return y


@fusion.fused(dynamic=False)
def augment(cfg: StaticConfig, images: Tensor, targets: Tensor, t: dict[str, Tensor], mean: Tensor,
            std: Tensor) -> tuple[Tensor, Tensor]:
    """The device half: images uint8 (B, C, H, H), targets int64 (B,), the
    plan's tensors on the device, mean/std float32 (3,) -> (float32 (B, 3, S, S)
    normalised images, float32 (B, num_classes) soft targets). Fused: one
    compiled graph (static shapes)."""
    x = _crop(cfg, images, t)
    for k in range(cfg.layers):
        x = _layer(cfg, x, t, f"layer{k}")
    if cfg.jitter:
        x = color_jitter(x, t["jitter.factors"], t["jitter.order"])
    x = normalize(x, mean, std)
    if cfg.erase_mode is not None:
        boxes = (t[f"erase.{n}"] for n in ("top", "left", "h", "w"))
        x = random_erasing(x, *boxes, t["noise.seed"], mode=cfg.erase_mode)
    if cfg.mixes:
        x = blend_with_reverse(x, t["mix.weight"], t["mix.box"])
    y = smoothed_targets(targets, cfg.num_classes, t["mix.lam"], cfg.smoothing)
    return x.contiguous(), y


def blend_with_reverse(x: Tensor, weight: Tensor, box: Tensor) -> Tensor:
    """timm's batch Mixup/CutMix as one blend with the reversed batch:
    ``x * a + x.flip(0) * (1 - a)`` with a = 0 inside ``box`` (y0, y1, x0, x1)
    int64 (4,) and ``weight`` (float32 0-d) outside: Mixup is weight = lam and
    an empty box, CutMix weight = 1 and its box, neither weight = 1 and an
    empty box (each exact: x * 1 + y * 0 is x)."""
    h, w = x.shape[2:]
    rows = torch.arange(h, device=x.device).view(h, 1)
    cols = torch.arange(w, device=x.device).view(1, w)
    inside = (rows >= box[0]) & (rows < box[1]) & (cols >= box[2]) & (cols < box[3])
    a = torch.where(inside, torch.zeros_like(weight), weight)
    return x * a + x.flip(0) * (1.0 - a)


def apply(cfg: StaticConfig, images: Tensor, targets: Tensor, t: dict[str, Tensor], mean: Tensor,
          std: Tensor) -> tuple[Tensor, Tensor]:
    """GpuAugment.apply for a StaticPlan whose tensors ``t`` are on the images'
    device; mean/std float32 (3,) on that device."""
    with tf32_matmuls(cfg.precision == "tf32x2" and images.is_cuda):
        return augment(cfg, images, targets, t, mean, std)
