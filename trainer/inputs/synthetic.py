"""A pipeline of one random batch on the device, for timing the model alone."""

from __future__ import annotations

import itertools
from typing import Iterator

import torch
from torch import Tensor


class SyntheticPipeline:
    """The same random batch every step, already on the device: measures
    the model alone (bench)."""

    name = "synthetic"

    def __init__(self, batch: int, input_size: int, num_classes: int, device: torch.device, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.randn(batch, 3, input_size, input_size, generator=generator).to(device)
        labels = torch.randint(num_classes, (batch,), generator=generator)
        self.y = torch.nn.functional.one_hot(labels, num_classes).float().to(device)

    def batches(self, start_step: int, stop_step: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        steps = range(start_step, stop_step) if stop_step is not None else itertools.count(start_step)
        for _ in steps:
            yield self.x, self.y
