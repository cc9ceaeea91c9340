"""The exact-epoch schedule of the streaming input path: which samples every
rank trains on at every step, as a pure function of (seed, step), such that
each rank reads only its own share of the shards.

Epoch ``e`` of the streamed order:

1. the shards are permuted (a generator seeded with ``(seed, e)``), and
   their samples, concatenated in that order, form the epoch's shard-ordered
   sequence of all N samples;
2. the global stream's positions ``[eN, (e+1)N)`` are cut into global
   batches of ``B`` exactly as in the in-memory schedule (rank ``r`` owns
   the slots ``[r*b, (r+1)*b)`` of every global batch, b = B / W). Rank r
   owns ``q_r(e)`` of the epoch's positions, and takes the next ``q_r(e)``
   samples of the shard-ordered sequence: a contiguous run of shards, so it
   reads about N / W samples' worth of shards (the shards at the cut points
   are shared by two ranks, each keeping its part);
3. the rank's run is cut into windows of ``window`` consecutive samples
   (the shuffle buffer) and each window is permuted (seeded with
   ``(seed, e, r, window number)``): a rank holds two or three windows of
   encoded samples at a time, never the set.

So the rule at the epoch's end is the in-memory one: the stream is the
epochs back to back, each rank takes b per step, and the last global batch
of an epoch is completed from the next epoch's order. Every sample is seen
exactly once in the positions of each epoch, every rank takes the same
number of batches, and nothing depends on the number of loader workers.
The order depends on the number of ranks (it decides the cut points): a
streamed run resumes with the same world size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ..schedule import EpochSchedule, mix_seed

DEFAULT_WINDOW = 8192  # samples per shuffle window (the buffer's size)


@dataclass
class StreamSchedule(EpochSchedule):
    """An EpochSchedule whose epoch orders follow the shards (see the module).

    shard_counts: samples per shard, in the manifest's shard order; the
    shards hold consecutive sample indices (shard k starts where k - 1
    ends). window: samples per shuffle window (>= 1).
    """

    shard_counts: Sequence[int] = ()
    window: int = DEFAULT_WINDOW
    _orders: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        counts = np.asarray(self.shard_counts, dtype=np.int64)
        assert counts.ndim == 1 and len(counts) >= 1 and (counts >= 1).all(), "shards must hold samples"
        assert int(counts.sum()) == self.num_samples, f"shards hold {counts.sum()}, not {self.num_samples} samples"
        assert self.window >= 1, f"shuffle window must be >= 1, got {self.window}"
        self._counts = counts
        self._firsts = np.concatenate([[0], np.cumsum(counts)[:-1]])

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any], global_batch: int, seed: int, world_size: int = 1,
                      rank: int = 0, window: int = DEFAULT_WINDOW) -> "StreamSchedule":
        shards = sorted(manifest["shards"], key=lambda s: s["first"])
        return cls(manifest["num_samples"], global_batch, seed, world_size, rank,
                   shard_counts=tuple(s["count"] for s in shards), window=window)

    # --- the epoch's order ---------------------------------------------------
    def shard_order(self, epoch: int) -> np.ndarray:
        """int64 (num_shards,): shard numbers (positions in the sorted manifest) in epoch ``epoch``'s order."""
        generator = torch.Generator().manual_seed(mix_seed(self.seed, 0x5AAD, epoch))
        return torch.randperm(len(self._counts), generator=generator).numpy()

    def _slots_before(self, position: int, rank: int | None = None) -> int:
        """How many of rank ``rank``'s (default: this rank's) slots the global stream has before ``position``."""
        whole, rest = divmod(position, self.global_batch)
        b, rank = self.local_batch, self.rank if rank is None else rank
        return whole * b + min(max(rest - rank * b, 0), b)

    def _run(self, epoch: int) -> tuple[int, int]:
        """[start, stop) of this rank's run in the epoch's shard-ordered sequence."""
        n, start = self.num_samples, 0
        begin, end = epoch * n, (epoch + 1) * n
        for rank in range(self.rank):
            start += self._slots_before(end, rank) - self._slots_before(begin, rank)
        return start, start + self._slots_before(end) - self._slots_before(begin)

    def run_samples(self, epoch: int) -> np.ndarray:
        """int64 (q,): this rank's samples of epoch ``epoch`` in shard order (before the shuffle)."""
        return self._epoch(epoch)[0]

    def local_order(self, epoch: int) -> np.ndarray:
        """int64 (q,): this rank's samples of epoch ``epoch`` in training order (each window shuffled)."""
        return self._epoch(epoch)[1]

    def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(run in shard order, run in training order) of epoch ``epoch``, cached for the last two epochs."""
        cached = self._orders.get(epoch)
        if cached is None:
            run = self._shard_ordered_run(epoch)
            order = np.empty_like(run)
            for w, start in enumerate(range(0, len(run), self.window)):
                piece = run[start: start + self.window]
                generator = torch.Generator().manual_seed(mix_seed(self.seed, 0xB0F, epoch, self.rank, w))
                order[start: start + len(piece)] = piece[torch.randperm(len(piece), generator=generator).numpy()]
            if len(self._orders) >= 2:  # a step touches at most two epochs
                self._orders.pop(min(self._orders))
            cached = self._orders[epoch] = (run, order)
        return cached

    def _shard_ordered_run(self, epoch: int) -> np.ndarray:
        start, stop = self._run(epoch)
        if stop <= start:
            return np.zeros(0, dtype=np.int64)
        order = self.shard_order(epoch)
        ends = np.cumsum(self._counts[order])
        first, last = np.searchsorted(ends, start, side="right"), np.searchsorted(ends, stop - 1, side="right")
        pieces = [np.arange(self._firsts[s], self._firsts[s] + self._counts[s]) for s in order[first:last + 1]]
        offset = int(ends[first] - self._counts[order[first]])  # where shard `first` starts in the sequence
        return np.concatenate(pieces)[start - offset: stop - offset]

    def permutation(self, epoch: int) -> np.ndarray:
        raise NotImplementedError("the streamed order is per rank: use indices(step) or local_order(epoch)")

    # --- steps ---------------------------------------------------------------
    def _pieces(self, step: int) -> list[tuple[int, int, int]]:
        """(epoch, first local index, count) of this rank's samples at ``step``, in order."""
        n = self.num_samples
        position = step * self.global_batch + self.rank * self.local_batch
        stop = position + self.local_batch
        pieces = []
        while position < stop:
            epoch = position // n
            take = min(stop, (epoch + 1) * n) - position
            pieces.append((epoch, self._slots_before(position) - self._slots_before(epoch * n), take))
            position += take
        return pieces

    def indices(self, step: int) -> np.ndarray:
        """int64 (b,): this rank's samples at ``step``."""
        parts = [self.local_order(e)[j: j + k] for e, j, k in self._pieces(step)]
        return np.concatenate(parts)

    def windows(self, step: int) -> list[tuple[int, int]]:
        """(epoch, window) pairs whose samples this rank trains on at ``step``, in order."""
        found: list[tuple[int, int]] = []
        for epoch, j, k in self._pieces(step):
            for w in range(j // self.window, (j + k - 1) // self.window + 1):
                found.append((epoch, w))
        return found

    def window_count(self, epoch: int) -> int:
        start, stop = self._run(epoch)
        return -(-(stop - start) // self.window)

    def window_samples(self, epoch: int, window: int) -> np.ndarray:
        """int64: the samples of one window (in shard order)."""
        return self.run_samples(epoch)[window * self.window: (window + 1) * self.window]

    def shards_of(self, samples: np.ndarray) -> np.ndarray:
        """int64: the shard numbers holding ``samples``, each once, in first-seen order."""
        shards = np.searchsorted(self._firsts, samples, side="right") - 1
        _, first_seen = np.unique(shards, return_index=True)
        return shards[np.sort(first_seen)]

    def position(self, step: int) -> dict[str, int]:
        """Where this rank's stream stands before ``step`` (checkpoints record it)."""
        epoch, j, _ = self._pieces(step)[0]
        return {"epoch": epoch, "offset": j, "window": j // self.window, "rank": self.rank,
                "world_size": self.world_size, "shuffle_window": self.window}

