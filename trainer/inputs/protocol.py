"""The input path behind one small interface, so that the CPU path (timm
transforms in DataLoader workers, ``cpu.py``) and the device path
(``gpu_augment.GpuAugment`` on a batch of cached uint8 images) are
interchangeable:

    pipeline.batches(start_step, stop_step=None)
        -> iterator of (images float32 (b, 3, S, S) on the device,
                        soft targets float32 (b, C) on the device)

Both index the same exact-epoch schedule, so the data order is the same
whichever path runs; the augmentation draws differ (different generators).
"""

from __future__ import annotations

from typing import Iterator, Protocol

from torch import Tensor


class InputPipeline(Protocol):
    name: str

    def batches(self, start_step: int, stop_step: int | None = None) -> Iterator[tuple[Tensor, Tensor]]: ...
