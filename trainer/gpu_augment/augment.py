"""GpuAugment: the whole recipe. Every per-sample choice is drawn on the
host (``plan``), then the pixels are worked on the device (``apply``)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..recipe import AugmentRecipe
from .color_jitter import color_jitter, sample_color_jitter
from .crop import (RESIZE_PRECISIONS, two_pass_resize, axis_weights, resize_order, sample_crop_boxes,
                   sample_flips)
from .draws import draw_rand
from . import fusion
from .erasing import random_erasing, sample_erasing_boxes
from .mixing import mix_batch, mix_choice, sample_cutmix_box, sample_mix_params, smoothed_targets
from .pixel_ops import normalize
from .rand_augment import (apply_rand_augment_layer, parse_rand_augment, plan_rand_augment_layer,
                           sample_rand_augment_layer)
from . import static as static_layout
from .plans import AugmentPlan, BatchDraws, StaticPlan
from .transfer import pack


GENERATOR_ON_HOST = True  # GpuAugment takes a CPU generator (see GpuAugment)


def default_resize(device: torch.device) -> str:
    """GpuAugment's resize method when none is asked for: "tf32x2" on CUDA
    (fused or not), "fp32" on the CPU.

    Why tf32x2 over "taps", although "taps" moves a quarter of the bytes:
    timed in the compiled static graph (benchmarks/RESULTS.md), its first
    pass (each output pixel gathering its window's pixels from 512-wide rows)
    is slower than streaming whole rows through the tensor cores."""
    return "tf32x2" if device.type == "cuda" else "fp32"


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

    resize_precision: how the crop's two resize passes run: "fp32" matrix
    products, or "tf32x2", each as two products on TF32 tensor cores whose
    operands are exact in TF32, or "taps", each output pixel summed from the
    few input pixels of its window (no products with the zeros around it;
    one kernel per pass when fused); all three equally close to PIL (tested).
    None (default): default_resize. benchmarks/augment_bench.py
    --resize-precision times them side by side.

    fuse: run the heaviest device functions compiled (``fusion.py``: one
    kernel where eager PyTorch writes a tensor per operation; the first
    batches pay the compilation). Same results up to float rounding.

    static: lay batches out in shapes that are the same for every batch
    (``static.py``: each op computed on every sample, identity where not
    drawn, the geometric ops on a fixed number of slots), so that the device
    half is one fixed graph of kernels: compiled once with ``fuse``, and
    capturable as a CUDA graph (``graphs.py``). Same results as the
    op-by-op layout up to float rounding.
    """

    def __init__(self, recipe: AugmentRecipe, num_classes: int, device: torch.device | str,
                 resize_precision: str | None = None, fuse: bool = False, static: bool = False):
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
        if resize_precision is None:
            resize_precision = default_resize(self.device)
        if resize_precision not in RESIZE_PRECISIONS:
            raise ValueError(f"resize_precision must be one of {RESIZE_PRECISIONS}, got {resize_precision!r}")
        self.resize_precision = resize_precision
        self.fuse = bool(fuse)
        self.static = bool(static)
        self._constants: dict[torch.device, tuple[Tensor, Tensor]] = {}
        # One object for the run: the compiled static graph specialises on its values.
        self.static_config = static_layout.StaticConfig.of(
            recipe, self.rand_augment, size=self.size, expand_to_rgb=self._channels_after_expand(1) == 3,
            precision=self.resize_precision, fill=self.fill, jitter=self.color_jitter is not None,
            num_classes=self.num_classes)

    def __getstate__(self) -> dict:
        # Picklable for DataLoader workers that plan ahead: the per-device
        # constants are remade where needed.
        return {**self.__dict__, "_constants": {}}

    def _cubic(self, batch: int, generator: torch.Generator) -> Tensor | bool:
        """Bicubic (True) or bilinear: one bool for the batch, or with 'random'
        (timm's per-call coin flip) bool (batch,), one per sample."""
        if self.interpolation == "random":
            return draw_rand((batch,), generator) < 0.5
        return self.interpolation == "bicubic"

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

    def draw(self, shape: tuple[int, int, int, int], generator: torch.Generator) -> BatchDraws:
        """Every random choice of one batch of images of ``shape`` (B, C, H, W),
        from the CPU ``generator``, in a fixed order (the same draws whichever
        way plan() then lays them out for the device)."""
        r, s = self.recipe, self.size
        b, c, height, width = shape
        if r.crop:
            top, left, h, w = sample_crop_boxes(b, height, width, r.scale, r.ratio, generator)
        else:
            zero = torch.zeros(b, dtype=torch.int64)
            top, left, h, w = zero, zero, zero + height, zero + width
        cubic = self._cubic(b, generator)
        hflip, vflip = sample_flips(b, r.hflip, r.vflip, generator)
        layers = []
        if self.rand_augment is not None:
            for _ in range(self.rand_augment.num_layers):
                op, apply, magnitude, sign = sample_rand_augment_layer(b, self.rand_augment, generator)
                layers.append((op, apply, magnitude, sign, self._cubic(b, generator)))
        jitter = sample_color_jitter(b, self.color_jitter, generator) if self.color_jitter is not None else None
        erase = sample_erasing_boxes(b, s, s, r.reprob, generator, max_count=r.recount) if r.reprob > 0 else None
        mix, lam, box = "none", 1.0, (0, 0, 0, 0)
        if r.mixes:
            lam_t, use_cutmix = sample_mix_params(r.mixup_alpha, r.cutmix_alpha, r.mix_prob, r.switch_prob, generator)
            *box_t, lam_box = sample_cutmix_box(lam_t, s, s, generator)
            mix, lam, box = mix_choice(lam_t, use_cutmix, tuple(box_t), lam_box)
        noise_seed = int(torch.randint(2**62, (), generator=generator))
        return BatchDraws(tuple(shape), (top, left, h, w), cubic, hflip, vflip, layers, jitter, erase, mix, lam, box,
                          noise_seed)

    def plan(self, shape: tuple[int, int, int, int], generator: torch.Generator) -> AugmentPlan | StaticPlan:
        """Draw one batch's choices for images of ``shape`` (B, C, H, W) from the
        CPU ``generator`` and lay them out for the device: a StaticPlan when
        this augmentation is ``static`` and the batch fits its layout (see
        static.py), else an AugmentPlan. Pure host work on tensors of a few
        thousand elements."""
        draws = self.draw(shape, generator)
        if self.static:
            plan = static_layout.plan(draws, self.size, self.rand_augment)
            if plan is not None:
                return plan
        return self._subset_plan(draws)

    def _subset_plan(self, d: BatchDraws) -> AugmentPlan:
        """The draws as an AugmentPlan: each op's samples listed."""
        s = self.size
        b, c = d.shape[:2]
        top, left, h, w = d.crop
        tensors: dict[str, Tensor] = {}
        vertical_first = resize_order(h, w, s)
        perm = torch.argsort(vertical_first.to(torch.uint8), stable=True)
        tensors["crop.perm"] = perm
        tensors["crop.inverse"] = torch.argsort(perm)
        tensors["crop.start"] = torch.cat([left[perm], top[perm]])
        tensors["crop.length"] = torch.cat([w[perm], h[perm]])
        if isinstance(d.cubic, Tensor):
            tensors["crop.cubic"] = torch.cat([d.cubic[perm], d.cubic[perm]])
        tensors["crop.reverse"] = torch.cat([d.hflip[perm], d.vflip[perm]])
        rows_first = b - int(vertical_first.sum())

        layers = []
        channels = self._channels_after_expand(c)
        for k, (op, apply, magnitude, sign, cubic) in enumerate(d.layers):
            layer = plan_rand_augment_layer(op, apply, magnitude, sign, self.rand_augment.ops, s, s, channels, cubic)
            tensors.update(layer.tensors(f"layer{k}"))
            layers.append(layer.kinds())

        if d.jitter is not None:
            tensors["jitter.factors"], tensors["jitter.order"] = d.jitter
        erase = d.erase is not None and bool(d.erase[4].any())
        if erase:
            tensors.update({f"erase.{n}": v for n, v in zip(("top", "left", "h", "w"), d.erase[:4])})
        tensors["mix.lam"] = torch.tensor(d.lam, dtype=torch.float32)  # on the device, for a compiled mixup
        tensors["noise.seed"] = torch.tensor(d.noise_seed, dtype=torch.int64)
        return AugmentPlan(*pack(tensors), rows_first, layers, d.jitter is not None, erase, d.mix, d.lam, d.box)

    # -- device: work the pixels ------------------------------------------------

    def _mean_std(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """The recipe's mean and std, float32 (3,) tensors made once per device."""
        if device not in self._constants:
            self._constants[device] = tuple(torch.tensor(v, dtype=torch.float32).to(device)
                                            for v in (self.recipe.mean, self.recipe.std))
        return self._constants[device]

    def _normalize(self, x: Tensor) -> Tensor:
        return normalize(x, *self._mean_std(x.device))

    def _crop(self, images: Tensor, plan: AugmentPlan, dev: dict[str, Tensor]) -> Tensor:
        """RandomResizedCrop + flips (folded into the resize matrices):
        uint8 (B, C, H, W) -> float32 (B, C', S, S) of integers."""
        b, c, height, width = images.shape
        s, k = self.size, plan.rows_first
        if 0 < k < b:
            images = images.index_select(0, dev["crop.perm"])
        start, length, reverse = (dev[f"crop.{n}"] for n in ("start", "length", "reverse"))
        cubic = dev.get("crop.cubic", self.interpolation == "bicubic")
        precision = self.resize_precision
        if height == width:  # both axes in one call
            weights = axis_weights(start, length, width, s, cubic, reverse, precision)
            wx, wy = [m[:b, None] for m in weights], [m[b:, None] for m in weights]
        else:
            x_cubic, y_cubic = (cubic[:b], cubic[b:]) if isinstance(cubic, Tensor) else (cubic, cubic)
            wx = [m[:, None] for m in axis_weights(start[:b], length[:b], width, s, x_cubic, reverse[:b], precision)]
            wy = [m[:, None] for m in axis_weights(start[b:], length[b:], height, s, y_cubic, reverse[b:], precision)]

        out = two_pass_resize(images, wx, wy, k)
        out = out.index_select(0, dev["crop.inverse"]) if 0 < k < b else out
        # Grayscale becomes RGB after the crop, not before: the crop treats
        # every channel alike, so this is the same image for a third of the
        # crop's work (later ops write in place: a real copy, not a view).
        return out.expand(-1, 3, -1, -1).contiguous() if self._channels_after_expand(c) != c else out

    def apply(self, images: Tensor, targets: Tensor, plan: AugmentPlan) -> tuple[Tensor, Tensor]:
        """Augment ``images`` uint8 (B, C, H, W) on their device as ``plan`` says."""
        # The resize and the value ops need float32 (the integers must stay
        # exact): never let a caller's autocast turn the matmuls into bf16.
        # No autograd either: nothing here needs gradients (and compiling
        # under no_grad traces no backward).
        with torch.autocast(images.device.type, enabled=False), torch.no_grad(), fusion.enabled(self.fuse):
            return self._apply(images, targets, plan)

    def _apply(self, images: Tensor, targets: Tensor, plan: AugmentPlan | StaticPlan) -> tuple[Tensor, Tensor]:
        r = self.recipe
        if images.dim() == 3:
            images = images[:, None]
        if isinstance(plan, StaticPlan):
            return static_layout.apply(self.static_config, images, targets, plan.to(images.device).tensors,
                                       *self._mean_std(images.device))
        dev = plan.to(images.device).tensors

        x = self._crop(images, plan, dev)
        fill = self.fill if x.shape[1] == 3 else self.fill[:1]
        for k, layer in enumerate(plan.layers):
            x = apply_rand_augment_layer(x, layer.on(dev, f"layer{k}"), fill)
        if plan.jitter:
            x = color_jitter(x, dev["jitter.factors"], dev["jitter.order"])

        x = self._normalize(x)

        if plan.erase:
            boxes = (dev[f"erase.{n}"] for n in ("top", "left", "h", "w"))
            x = random_erasing(x, *boxes, dev["noise.seed"], mode=r.remode)

        # x is this call's own tensor (normalize made it): mix in place.
        x = mix_batch(x, plan.mix, dev["mix.lam"], plan.box, inplace=True)
        y = smoothed_targets(targets, self.num_classes, plan.lam, r.label_smoothing)
        return x.contiguous(), y
