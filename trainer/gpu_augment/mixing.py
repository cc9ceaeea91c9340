"""timm's Mixup / CutMix (mode 'batch') and its soft targets."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .draws import draw_rand, draw_randn
from .fusion import fused


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
    z = draw_randn((*shape, tries), generator, dtype=torch.float64)
    u = draw_rand((*shape, tries), generator, dtype=torch.float64)
    v = (1 + c * z) ** 3
    accept = (v > 0) & (torch.log(u) < 0.5 * z * z + d - d * v + d * torch.log(v.clamp(min=1e-300)))
    first = accept.to(torch.uint8).argmax(-1, keepdim=True)
    g = d * v.gather(-1, first).squeeze(-1).clamp(min=0)
    if boost:
        g = g * draw_rand(shape, generator, dtype=torch.float64) ** (1.0 / alpha)
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
    u = draw_rand((2, *shape), generator)
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
    u = draw_rand((2, *lam.shape), generator, dtype=torch.float64)
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


def mix_batch(x: Tensor, mode: str, lam: float | Tensor, box: tuple[int, int, int, int],
              inplace: bool = False) -> Tensor:
    """Mix the batch x (N, C, H, W) with its reverse (x.flip(0)), as timm's
    ``Mixup._mix_batch``: "mixup" is ``lam * x + (1 - lam) * flipped``,
    "cutmix" pastes the box (y0, y1, x0, x1) from flipped, "none" returns x.
    The choice is made on the host (mix_choice), so only one is computed.
    lam: a float, or a 0-d float32 tensor on x's device (what a compiled
    mixup needs: a float would recompile it for every new value).
    inplace: x may be overwritten (CutMix then copies the box only)."""
    if mode == "cutmix":
        y0, y1, x0, x1 = box
        out = x if inplace else x.clone()
        out[:, :, y0:y1, x0:x1] = x[:, :, y0:y1, x0:x1].flip(0)
        return out
    if mode == "mixup":
        return _mixup(x, lam)
    if mode == "none":
        return x
    raise ValueError(f"unknown mix mode {mode!r}")


@fused
def _mixup(x: Tensor, lam: float | Tensor) -> Tensor:
    # timm's arithmetic (x * lam + flipped * (1 - lam)); fused, one pass.
    return x * lam + x.flip(0) * (1.0 - lam)


def smoothed_targets(targets: Tensor, num_classes: int, lam: Tensor | float, smoothing: float) -> Tensor:
    """timm's ``mixup_target``: smoothed one-hot (off = s / K, on = 1 - s + s / K)
    mixed with its reverse by lam. targets int64 (N,) -> float32 (N, K)."""
    off = smoothing / num_classes
    on = 1.0 - smoothing + off
    y = torch.full((targets.shape[0], num_classes), off, device=targets.device, dtype=torch.float32)
    y.scatter_(1, targets.long().view(-1, 1), on)
    return y * lam + y.flip(0) * (1.0 - lam)
