"""The DeiT/timm training augmentation, batched on the device.

The CPU reference path is timm's ``create_transform(is_training=True, ...)``
(RandomResizedCrop, flips, RandAugment ``rand-m9-mstd0.5-inc1``, ToTensor,
Normalize, RandomErasing) followed by ``timm.data.Mixup``. With 1,000 tiny
images replayed tens of thousands of times, that PIL pipeline is the
bottleneck, so this package does the same recipe on a batch of uint8 images
already resident on the device, in plain torch: it runs on ``device="cpu"``
in tests and on CUDA for speed, and keeps no global state (each DDP rank
augments its own batch with its own generator). Compiling is optional:
``GpuAugment(fuse=True)`` runs the heaviest functions as kernels fused by
``torch.compile`` (``fusion``), the same results.

Modules, in the order of the recipe: ``crop`` (RandomResizedCrop + flips),
``rand_augment`` (its pixel ops in ``pixel_ops``, geometric ones in
``geometric``), ``color_jitter``, ``pixel_ops.normalize``, ``erasing``,
``mixing``; ``augment.GpuAugment`` runs them all (``plan`` on the host,
``apply`` on the device); ``draws`` holds the random helpers, ``transfer``
the packing of a batch's choices into one tensor, ``fusion`` the optional
compiling.

Conventions
-----------
* Every random number comes from the ``torch.Generator`` passed in; neither
  torch's global RNG, numpy nor ``random`` is touched, so the same seed gives
  bit-identical output on the same device. GpuAugment draws every per-sample
  choice on the host from a CPU generator (a few kilobytes per batch) and
  sends them in one copy; only the per-pixel erasing noise is made on the
  device, hashed from a drawn seed and each pixel's position
  (``draws.hashed_normal``: the same on every device and inside a compiled
  graph or a CUDA graph).
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
* Nothing waits for the device: the host knows every choice, so the ops
  run on exactly the samples that drew them (index_select / index_copy_
  with sizes known on the host) and no kernel's result is read back.
* Two layouts of the same draws (``plans.py``): op by op (``AugmentPlan``,
  the least device work) or static (``StaticPlan``, ``static.py``: the same
  shapes for every batch, each op on every sample with identities where it
  was not drawn, so that the device half is one compiled graph, which
  ``graphs.py`` captures as CUDA graphs: the least host work). They give the
  same batches (bit for bit on the CPU).

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

Speed: ``benchmarks/augment_bench.py`` (operations and time per batch) and
``fractrain bench`` (through the training step); figures in
benchmarks/RESULTS.md.
"""

from __future__ import annotations

from .augment import AugmentPlan, GENERATOR_ON_HOST, GpuAugment
from .color_jitter import color_jitter, sample_color_jitter
from .crop import PILLOW_VERTICAL_FIRST, RESIZE_PRECISIONS, resize_order, resized_crop, sample_crop_boxes, sample_flips
from .erasing import random_erasing, sample_erasing_boxes
from .geometric import affine, rotate_matrix, shear_x_matrix, shear_y_matrix, translate_x_matrix, translate_y_matrix
from .mixing import mix_batch, mix_choice, sample_beta, sample_cutmix_box, sample_mix_params, smoothed_targets
from .pixel_ops import apply_lut, auto_contrast, brightness, color, contrast, equalize, invert, normalize, posterize, sharpness, solarize, solarize_add
from .rand_augment import LayerKinds, LayerPlan, RAND_INCREASING_TRANSFORMS, RAND_TRANSFORMS, RandAugmentConfig, apply_rand_augment_layer, level_to_arg, parse_rand_augment, plan_rand_augment_layer, rand_augment_layer, sample_rand_augment_layer

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
    "RESIZE_PRECISIONS",
    "resize_order",
    "resized_crop",
    "sample_flips",
    "sample_rand_augment_layer",
    "LayerKinds",
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
