"""The batch schedule: which sample indices every rank trains on at every
step, as a pure function of (seed, step). Two epoch modes:

``exact`` (the ``exact-epochs`` recipe): the stream of sample indices is
the concatenation of one permutation of ``range(N)`` per epoch (epoch
``e``'s permutation comes from a generator seeded with a hash of
``(seed, e)``). The stream is cut into global batches
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

``drop-last`` (the ``paper`` recipe; what the released code's
DistributedSampler + ``drop_last=True`` loader does): every epoch is its own
permutation cut into ``floor(N / B)`` whole global batches; the last
``N mod B`` samples of the permutation are not seen that epoch. Every rank
still takes ``B / W`` samples per step, no sample appears twice in an epoch,
and resuming at step ``s`` is again starting at batch ``s``. (The released
sampler pads the permutation to a multiple of ``W`` with repeated samples
before its loaders drop their last partial batch; here nothing is repeated,
so an epoch has ``floor(N / B)`` steps, which equals the released count
whenever ``W`` divides ``N``.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from typing import TYPE_CHECKING

import numpy as np
import torch

from .config import EPOCH_MODES
from .errors import UserError

if TYPE_CHECKING:
    from .config import TrainConfig



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
    mode: str = "exact"  # see EPOCH_MODES and the module docstring
    _cache: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        assert self.num_samples >= 1, "empty data set"
        assert self.global_batch >= 1 and self.global_batch % self.world_size == 0, \
            f"global batch {self.global_batch} not divisible by world size {self.world_size}"
        assert 0 <= self.rank < self.world_size, f"rank {self.rank} outside world size {self.world_size}"
        assert self.mode in EPOCH_MODES, f"epoch mode {self.mode!r} is not one of {EPOCH_MODES}"
        assert self.mode != "drop-last" or self.num_samples >= self.global_batch, \
            f"drop-last epochs need at least one global batch ({self.global_batch}) of {self.num_samples} samples"

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
        if self.mode == "drop-last":
            epoch, batch = divmod(step, self.drop_last_steps)
            first = batch * self.global_batch + self.rank * self.local_batch
            return self.permutation(epoch)[first: first + self.local_batch]
        first = step * self.global_batch + self.rank * self.local_batch
        return self.positions(first, first + self.local_batch)

    # --- steps and epochs ---------------------------------------------------
    @property
    def drop_last_steps(self) -> int:
        """Whole global batches in one permutation: floor(N / B)."""
        return self.num_samples // self.global_batch

    @property
    def steps_per_epoch(self) -> float:
        """N / B (exact) or floor(N / B) (drop-last)."""
        return float(self.drop_last_steps) if self.mode == "drop-last" else self.num_samples / self.global_batch

    def steps_for(self, samples: int) -> int:
        """Steps needed to see ``samples`` samples (rounded up to whole global batches)."""
        return max(1, math.ceil(samples / self.global_batch))

    def steps_for_epochs(self, epochs: float) -> int:
        """Steps of ``epochs`` epochs: ceil(epochs x N) samples in whole
        global batches (exact), or ceil(epochs x floor(N / B)) (drop-last)."""
        if self.mode == "drop-last":
            return max(1, math.ceil(epochs * self.drop_last_steps - 1e-9))
        return self.steps_for(math.ceil(epochs * self.num_samples))

    def epochs_done(self, steps: int) -> int:
        """Whole epochs completed after ``steps`` steps."""
        if self.mode == "drop-last":
            return steps // self.drop_last_steps
        return steps * self.global_batch // self.num_samples

    def epoch_at(self, steps: int) -> float:
        """Epochs completed after ``steps`` steps, fractional."""
        if self.mode == "drop-last":
            return steps / self.drop_last_steps
        return steps * self.global_batch / self.num_samples


def make_schedule(cfg: "TrainConfig", num_samples: int, world_size: int = 1, rank: int = 0) -> EpochSchedule:
    """A rank's schedule in the run's epoch mode (``cfg.budget.epoch_mode``);
    UserError when a drop-last epoch would hold no whole global batch."""
    mode = cfg.budget.epoch_mode
    if mode not in EPOCH_MODES:
        raise UserError(f"--epoch-mode must be {' or '.join(EPOCH_MODES)}, got {mode!r}")
    if mode == "drop-last" and num_samples < cfg.batch_size:
        raise UserError(f"--epoch-mode drop-last: the data set's {num_samples} samples hold no whole global batch "
                        f"of {cfg.batch_size}; use a smaller --batch-size or --epoch-mode exact")
    return EpochSchedule(num_samples, cfg.batch_size, cfg.run.seed, world_size, rank, mode=mode)
