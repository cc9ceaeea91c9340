"""What the host hands the device for one batch: the random draws
(``BatchDraws``) and the two ways GpuAugment lays them out, packed into one
buffer (``AugmentPlan``: each op's samples listed; ``StaticPlan``: the same
shapes for every batch, see static.py)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from .rand_augment import LayerKinds
from .transfer import Layout, send, unpack


@dataclass
class BatchDraws:
    """Every random choice of one batch (``GpuAugment.draw``), host tensors.

    * shape: the images' (B, C, H, W);
    * crop: (top, left, h, w), int64 (B,) each; cubic: the crop's
      interpolation, a bool for the batch or bool (B,) ('random');
      hflip, vflip: bool (B,);
    * layers: per RandAugment layer (op int64, apply bool, magnitude float32,
      sign float32, each (B,); cubic, a bool or bool (B,));
    * jitter: colour jitter (factors float32 (B, 3), order int64 (B, 3)) or None;
    * erase: (top, left, h, w, active), each (B, K), or None (no erasing);
    * mix: "none", "mixup" or "cutmix"; lam: the targets' weight
      (box-corrected for CutMix); box: CutMix's (y0, y1, x0, x1);
    * noise_seed: the erasing noise's seed (``hashed_normal``).
    """

    shape: tuple[int, int, int, int]
    crop: tuple[Tensor, Tensor, Tensor, Tensor]
    cubic: Tensor | bool
    hflip: Tensor
    vflip: Tensor
    layers: list[tuple[Tensor, Tensor, Tensor, Tensor, Tensor | bool]]
    jitter: tuple[Tensor, Tensor] | None
    erase: tuple[Tensor, Tensor, Tensor, Tensor, Tensor] | None
    mix: str
    lam: float
    box: tuple[int, int, int, int]
    noise_seed: int


@dataclass
class PackedPlan:
    """A plan's tensors packed in one uint8 ``buffer`` (a few hundred kB), so
    that a plan is one tensor to pin, to send between processes (plans can be
    drawn ahead in DataLoader workers) and to copy to the device; ``tensors``
    views it by name."""

    buffer: Tensor
    layout: Layout

    @property
    def tensors(self) -> dict[str, Tensor]:
        """The packed tensors by name (views of ``buffer``, wherever it is)."""
        return unpack(self.buffer, self.layout)

    def to(self, device: torch.device):
        """The plan with its buffer on ``device`` (one non-blocking copy, ``send``)."""
        buffer = send(self.buffer, device)
        return self if buffer is self.buffer else replace(self, buffer=buffer)


@dataclass
class AugmentPlan(PackedPlan):
    """One batch laid out op by op: the device works on just the samples each
    op concerns, and plain Python fields say which kernels run (so the device
    never has to report anything back).

    Crop (names ``crop.*``): samples are resized in two groups, those PIL
    resizes horizontally first and those it resizes vertically first
    (``rows_first`` of them, listed first by the permutation ``crop.perm``,
    int64 (N,); ``crop.inverse`` restores the order). ``crop.start``,
    ``crop.length`` int64 (2N,), ``crop.reverse`` bool (2N,) and, with
    'random' interpolation only, ``crop.cubic`` bool (2N,): the x-axis windows
    of the permuted samples, then their y-axis windows; ``reverse`` is the
    flip of that axis. ``noise.seed``: int64 0-d, the erasing noise's seed.
    """

    rows_first: int
    layers: list[LayerKinds]  # RandAugment's layers (their tensors are packed, named layer0.*, layer1.*, ...)
    jitter: bool  # colour jitter (``jitter.factors`` (N, 3), ``jitter.order`` (N, 3))
    erase: bool  # any sample erased: ``erase.top/left/h/w`` int64 (N, K), h = w = 0 where not
    mix: str  # "none", "mixup" or "cutmix"
    lam: float  # the targets' mixing weight (box-corrected for CutMix)
    box: tuple[int, int, int, int]  # CutMix (y0, y1, x0, x1)


@dataclass
class StaticPlan(PackedPlan):
    """One batch laid out in shapes that depend only on the batch size and
    the recipe (static.py lists the tensors): every batch runs the same
    kernels on the same shapes, which one compiled graph or one CUDA graph
    can then replay. ``key`` names the layout: plans with the same key have
    the same buffer size and layout."""

    key: tuple
