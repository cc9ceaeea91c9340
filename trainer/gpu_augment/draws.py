"""Random draws for the augmentation, all from the caller's ``torch.Generator``
on its device (GpuAugment passes a CPU one: the choices are drawn on the host),
and per-channel constants."""

from __future__ import annotations

import torch
from torch import Tensor


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
