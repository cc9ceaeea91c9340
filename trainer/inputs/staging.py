"""Pinned host buffers, pinned once and reused, for the device path's
per-step host-to-device copies (a step's sample indices and its packed
augmentation plan: a few to a few hundred kB).

Why not ``tensor.pin_memory()`` per step: pinning afresh costs the
training thread milliseconds per call (cProfile of `fractrain bench`,
benchmarks/RESULTS.md), several percent of a compiled ViT-Tiny step; copying
tens of kB into a buffer that is already pinned costs microseconds. And copying from
unpinned memory instead would make the host wait for the stream.

A slot is rewritten only after the copies read from it have run: the
caller records, on the stream that queued them, an event for the slot it
last staged (``queued``), and ``stage`` waits for a slot's event before
reusing it (with enough slots it has long passed).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

_ALIGN = 64  # bytes: every staged array starts on a cache line (and on its dtype's alignment)


class PinnedRing:
    """``slots`` reusable host buffers (pinned when ``pin``), used in turn.

    ``stage(arrays)`` copies numpy arrays into the next slot and returns
    tensors viewing it (same dtypes and shapes); ``queued(stream)`` marks the
    slot staged last as read by the copies queued so far on ``stream``.
    ``event_factory`` makes the marks (tests pass a fake; default
    torch.cuda.Event).
    """

    def __init__(self, slots: int = 8, pin: bool = True,
                 event_factory: Callable[[], object] | None = None):
        if slots < 1:
            raise ValueError(f"a ring needs at least one slot, got {slots}")
        self.pin = pin
        self._event_factory = event_factory or torch.cuda.Event
        self._buffers: list[Tensor | None] = [None] * slots
        self._events: list[object | None] = [None] * slots
        self._turn = 0
        self._last: int | None = None

    def _buffer(self, slot: int, nbytes: int) -> Tensor:
        """The slot's uint8 buffer of at least ``nbytes`` (grown to the next power of two)."""
        buffer = self._buffers[slot]
        if buffer is None or buffer.numel() < nbytes:
            size = 1 << max(12, (nbytes - 1).bit_length())
            buffer = torch.empty(size, dtype=torch.uint8, pin_memory=self.pin)
            self._buffers[slot] = buffer
        return buffer

    def stage(self, arrays: list[np.ndarray]) -> list[Tensor]:
        """Copies of ``arrays`` in the next slot's buffer, as tensors of the
        same dtypes and shapes (valid until that slot's next turn)."""
        slot = self._turn
        self._turn = (slot + 1) % len(self._buffers)
        event = self._events[slot]
        if event is not None:
            event.synchronize()  # the copies that read this slot last time have run
            self._events[slot] = None
        arrays = [a if a.flags.c_contiguous else a.copy(order="C") for a in map(np.asarray, arrays)]
        offsets, end = [], 0
        for array in arrays:
            offsets.append(end)
            end += -(-array.nbytes // _ALIGN) * _ALIGN
        buffer = self._buffer(slot, max(end, 1))
        host = buffer.numpy()
        views = []
        for array, offset in zip(arrays, offsets):
            # numpy's copy: one thread. torch's copy_ splits copies over its
            # intra-op pool past 32k elements (a plan is ~50 kB), waking every
            # pool thread each step beside the training thread.
            flat = host[offset:offset + array.nbytes]
            np.copyto(flat.view(array.dtype).reshape(array.shape), array, casting="no")
            dtype = torch.from_numpy(array).dtype  # a view: no copy
            views.append(buffer[offset:offset + array.nbytes].view(dtype).view(array.shape))
        self._last = slot
        return views

    def queued(self, stream=None) -> None:
        """Record, on ``stream`` (a CUDA stream; None: the current one), that
        the copies reading the slot staged last have been queued."""
        if self._last is None:
            return
        event = self._event_factory()
        event.record(stream) if stream is not None else event.record()
        self._events[self._last] = event
        self._last = None
