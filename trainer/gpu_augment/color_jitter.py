"""torchvision's ColorJitter on PIL images (what timm uses without
RandAugment), batched: exact against PIL."""

from __future__ import annotations

import torch
from torch import Tensor

from .draws import channel_constants, draw_rand
from .pixel_ops import brightness_lut, sample_column, contrast_lut, lut_levels, luma_mean, apply_lut, color


def sample_color_jitter(
    batch: int, strength: tuple[float, float, float], generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """torchvision ColorJitter(b, c, s) draws per sample: factors float32 (N, 3) for
    (brightness, contrast, saturation), each ~ U(max(0, 1 - s), 1 + s) (1 where s = 0),
    and the order int64 (N, 3): a uniformly random permutation of (0, 1, 2)
    (torchvision permutes four ops, hue included; with hue off that leaves a
    uniform order of the other three)."""
    lo = channel_constants([max(0.0, 1 - s) for s in strength], generator.device)
    hi = channel_constants([1 + s for s in strength], generator.device)
    factors = lo + (hi - lo) * draw_rand((batch, 3), generator)
    order = draw_rand((batch, 3), generator).argsort(dim=1)
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
            brightness_lut(f),
            torch.where((which == 1)[:, None, None], contrast_lut(f, luma_mean(x)), lut_levels(x.shape[0], x.device)),
        )
        out = apply_lut(x, lut)
        if x.shape[1] > 1:
            out = torch.where(sample_column(which == 2, 4), color(x, f), out)
        x = out
    return x
