"""Random draws for the augmentation, all from the caller's ``torch.Generator``
on its device (GpuAugment passes a CPU one: the choices are drawn on the host),
and per-channel constants."""

from __future__ import annotations

import torch
from torch import Tensor


def draw_rand(shape: tuple[int, ...], generator: torch.Generator, dtype=torch.float32) -> Tensor:
    return torch.rand(shape, generator=generator, device=generator.device, dtype=dtype)


def draw_randn(shape: tuple[int, ...], generator: torch.Generator, dtype=torch.float32) -> Tensor:
    return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype)


def channel_constants(values, device) -> Tensor:
    """Per-channel constants (C,) float32 made on the device by fill kernels,
    not torch.tensor(list), whose host-to-device copy would wait for the host."""
    return torch.stack([torch.full((), float(v), device=device) for v in values])


def draw_uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator) -> Tensor:
    return draw_rand(shape, generator) * (high - low) + low


def draw_randint_inclusive(low: Tensor | int, high: Tensor, generator: torch.Generator) -> Tensor:
    """Integers uniform on [low, high] (both inclusive, like random.randint) with
    per-element bounds, which torch.randint cannot take. int64, high's shape."""
    u = draw_rand(tuple(high.shape), generator, dtype=torch.float64)
    span = (high - low + 1).to(torch.float64)
    # u < 1, so floor(u * span) <= span - 1; the clamp only guards rounding.
    return (low + torch.floor(u * span).to(torch.int64)).minimum(high)


# Per-pixel noise as a pure function of a seed and the pixel's position: the
# same on every run and with any batching, and made by plain integer and
# float arithmetic, so a compiled kernel or a CUDA graph can produce it
# (a torch.Generator seeded per batch can be neither captured nor compiled).

_MASK32 = 0xFFFFFFFF


def _mul32(x: Tensor, constant: int) -> Tensor:
    """(x * constant) mod 2**32 for int64 x in [0, 2**32), without int64
    overflow (which C++ leaves undefined): the constant in two 16-bit halves."""
    low, high = constant & 0xFFFF, constant >> 16
    return (x * low + (((x * high) & 0xFFFF) << 16)) & _MASK32


def _hash32(x: Tensor) -> Tensor:
    """A 32-bit integer hash (xor-shift-multiply, constants of Wellons'
    'lowbias32'): int64 in [0, 2**32) -> the same range, every bit mixed."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def hashed_normal(seed: Tensor, shape: tuple[int, ...], device: torch.device | str) -> Tensor:
    """N(0, 1) float32 noise of ``shape`` (at most 2**32 elements) on ``device``,
    a pure function of ``seed`` (an int64 0-d tensor in [0, 2**62), on
    ``device``) and each element's flat position: Box-Muller on two uniforms
    hashed from (pair of positions, seed), whose cosine and sine give the
    pair's two values."""
    count = 1
    for size in shape:
        count *= size
    pair = torch.arange((count + 1) // 2, device=device, dtype=torch.int64)
    low, high = seed & _MASK32, (seed >> 32) & _MASK32
    bits_a = _hash32(_hash32((2 * pair) ^ low) ^ high)
    bits_b = _hash32(_hash32((2 * pair + 1) ^ low) ^ high)
    # 24-bit uniforms: u1 in (0, 1] (its log is finite), u2 in [0, 1).
    u1 = ((bits_a >> 8) + 1).to(torch.float32) * (1.0 / (1 << 24))
    u2 = (bits_b >> 8).to(torch.float32) * (1.0 / (1 << 24))
    radius = torch.sqrt(-2.0 * torch.log(u1))
    angle = (2.0 * torch.pi) * u2
    values = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1).view(-1)
    return values[:count].view(shape)
