"""timm's RandomErasing (after normalisation), batched."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .draws import draw_rand, draw_randint_inclusive, draw_uniform, hashed_normal


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
    erase = draw_rand((batch,), generator) <= probability  # timm skips when random() > p
    if min_count == max_count:
        count = torch.full((batch,), min_count, dtype=torch.int64, device=generator.device)
    else:
        count = draw_randint_inclusive(min_count, torch.full((batch,), max_count, device=generator.device), generator)
    target_area = draw_uniform((batch, k, tries), min_area, max_area, generator) * (height * width)
    target_area = target_area / count[:, None, None].to(torch.float32)
    aspect = torch.exp(draw_uniform((batch, k, tries), math.log(min_aspect), math.log(max_aspect), generator))
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
    top = draw_randint_inclusive(0, height - h, generator)
    left = draw_randint_inclusive(0, width - w, generator)
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
    seed: Tensor | int,
    mode: str = "pixel",
) -> Tensor:
    """Erase the boxes (N, K) of the normalised x float32 (N, C, H, W); samples
    with no box have h = w = 0. mode 'pixel': per-pixel N(0, 1) noise (timm's
    default here); 'rand': one N(0, 1) colour per sample and channel; 'const':
    0. In normalised space, as timm. The noise is ``hashed_normal(seed)`` over
    the whole batch (cheaper on a GPU than gathering the boxes; the
    distribution in each box is the same), so the same seed gives the same
    noise on every device and however the call is compiled or captured.
    seed: an int, or an int64 0-d tensor on x's device (no host round trip).
    """
    n, c, height, width = x.shape
    mask = _box_mask(top, left, h, w, height, width)[:, None]
    if not isinstance(seed, Tensor):
        seed = torch.tensor(int(seed), dtype=torch.int64).to(x.device, non_blocking=True)
    if mode == "pixel":
        fill = hashed_normal(seed, (n, c, height, width), x.device)
    elif mode == "rand":
        fill = hashed_normal(seed, (n, c, 1, 1), x.device)
    elif mode in ("const", ""):
        fill = torch.zeros((1,), device=x.device)
    else:
        raise ValueError(f"unknown random erasing mode {mode!r}")
    return torch.where(mask, fill, x)
