"""The exact-epoch batch schedule: which sample indices every rank trains on
at every step, as a pure function of (seed, step).

The stream of sample indices is the concatenation of one permutation of
``range(N)`` per epoch (epoch ``e``'s permutation comes from a generator
seeded with a hash of ``(seed, e)``). The stream is cut into global batches
of ``B`` indices, and rank ``r`` of ``W`` takes the slice
``[r * B / W, (r + 1) * B / W)`` of every global batch.

Consequences:

* every sample is seen exactly once per epoch, across all ranks and workers;
* epoch boundaries fall inside batches, so every rank always gets ``B / W``
  samples and no rank waits at the end of an epoch (no DDP hang);
* the number of steps is simply ``ceil(total_samples / B)``;
* resuming at step ``s`` is starting the stream at batch ``s``.

Unlike webdataset's ``resampled=True`` (shards drawn with replacement, about
a third of them skipped per epoch), nothing is sampled with replacement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (numpy's SeedSequence hashing): nearby
    inputs give unrelated seeds."""
    words = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint32)
    return (int(words[0]) << 31 | int(words[1]) >> 1) & ((1 << 63) - 1)


@dataclass
class EpochSchedule:
    """Sample indices per step for one rank.

    num_samples: N, samples per epoch; global_batch: B, samples per step over
    all ranks (divisible by ``world_size``); seed: the run's seed.
    """

    num_samples: int
    global_batch: int
    seed: int
    world_size: int = 1
    rank: int = 0
    _cache: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        assert self.num_samples >= 1, "empty data set"
        assert self.global_batch >= 1 and self.global_batch % self.world_size == 0, \
            f"global batch {self.global_batch} not divisible by world size {self.world_size}"
        assert 0 <= self.rank < self.world_size, f"rank {self.rank} outside world size {self.world_size}"

    @property
    def local_batch(self) -> int:
        return self.global_batch // self.world_size

    def permutation(self, epoch: int) -> np.ndarray:
        """int64 (N,): the order of epoch ``epoch``."""
        order = self._cache.get(epoch)
        if order is None:
            generator = torch.Generator().manual_seed(mix_seed(self.seed, 0x5EED, epoch))
            order = torch.randperm(self.num_samples, generator=generator).numpy()
            if len(self._cache) >= 4:  # a batch touches at most a few epochs
                self._cache.pop(min(self._cache))
            self._cache[epoch] = order
        return order

    def positions(self, start: int, stop: int) -> np.ndarray:
        """Sample indices at stream positions ``[start, stop)``: int64."""
        n = self.num_samples
        pieces = []
        position = start
        while position < stop:
            epoch, offset = divmod(position, n)
            take = min(stop - position, n - offset)
            pieces.append(self.permutation(epoch)[offset: offset + take])
            position += take
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)

    def indices(self, step: int) -> np.ndarray:
        """int64 (B / W,): this rank's samples at ``step``."""
        first = step * self.global_batch + self.rank * self.local_batch
        return self.positions(first, first + self.local_batch)

    # --- steps and epochs ---------------------------------------------------
    def steps_for(self, samples: int) -> int:
        """Steps needed to see ``samples`` samples (rounded up to whole global batches)."""
        return max(1, math.ceil(samples / self.global_batch))

    def epochs_done(self, steps: int) -> int:
        """Whole epochs completed after ``steps`` steps."""
        return steps * self.global_batch // self.num_samples

    def epoch_at(self, steps: int) -> float:
        """Epochs completed after ``steps`` steps, fractional."""
        return steps * self.global_batch / self.num_samples
