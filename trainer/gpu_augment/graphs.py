"""The static device half of GpuAugment (static.py), from the image cache to
the augmented batch, captured as CUDA graphs and replayed each step: the
host then spends a few microseconds per batch instead of launching every
kernel (which bounds a fast model's step; see benchmarks/RESULTS.md).

A graph reads and writes fixed memory. Each of two ``Slot``s owns its
inputs (the batch's indices and the plan's packed buffer, copied in before
a replay) and its outputs (the batch the training step reads). Slots take
turns, so batch k + 1 is written while step k reads batch k; before a slot
is written again, the stream doing it waits for the work already queued on
the training stream (the step that read that slot two batches ago).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import Tensor

from .plans import StaticPlan

# capture(fn) -> (replay, outputs): run fn so that replay() redoes it in place,
# writing outputs again. CUDA: a CUDA graph; tests pass a plain re-run.
Capture = Callable[[Callable[[], tuple[Tensor, Tensor]]], tuple[Callable[[], None], tuple[Tensor, Tensor]]]


def cuda_graph_capture(warmup: int = 3, pool=None) -> Capture:
    """A Capture by torch.cuda.graph: ``warmup`` runs on a side stream first
    (compiling, cuBLAS and allocator warm-up must not happen during capture),
    then one captured run. ``pool``: a memory pool to share (None: each graph
    its own; sharing is only safe for graphs whose outputs are used before
    the next graph of the pool replays, which GraphedAugment's slots are not)."""
    def capture(fn):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: the DataLoader's pin-memory thread may call CUDA
        # (pinned allocations) while this thread captures.
        with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
            outputs = fn()
        return graph.replay, outputs

    return capture


@dataclass
class Slot:
    indices: Tensor  # int64 (B,) on the device
    buffer: Tensor  # uint8, the plan's packed tensors, on the device
    replay: Callable[[], None]
    outputs: tuple[Tensor, Tensor]  # (images float32 (B, 3, S, S), targets float32 (B, K))


class GraphedAugment:
    """Batches of a StaticPlan layout by replaying captured graphs.

    ``cache`` uint8 (N, C, H, W) and ``labels`` int64 (N,) live on the
    device; ``augment`` is a GpuAugment with ``static=True``. Calling it with
    a step's indices (int64 (B,), pinned host memory) and its StaticPlan
    returns that step's (images, soft targets), in the slot's memory: valid
    until the slot's next turn, two calls later. The slots are built for the
    layout of the first plan; a plan of another layout (a different batch
    size) gets None (the caller runs it uncaptured). If capturing fails, a
    warning says so and every call returns None.

    The first ``verify`` batches are checked (at the price of a device sync
    each): each against the same batch computed uncaptured, and the batch
    before it for being intact after this one was made (the contract
    above). A graph that fails either check is a capture gone wrong, not a
    bad plan: a warning says so, that call and every later one return None,
    and the caller's uncaptured batches are the right ones.
    """

    def __init__(self, augment, cache: Tensor, labels: Tensor, capture: Capture | None = None, copies: int = 2,
                 verify: int = 3):
        self.augment = augment
        self.cache = cache
        self.labels = labels
        self.copies = copies
        self._capture = capture
        self._to_verify = verify
        self._kept: tuple[Tensor, Tensor] | None = None  # the last verified batch's images and their copy
        self.key = None
        self.slots: list[Slot] = []
        self.turn = 0
        self.failed = False

    def _batch(self, indices: Tensor, plan: StaticPlan) -> tuple[Tensor, Tensor]:
        """The device half, from the cache to the batch (what is captured);
        ``plan``'s buffer is already on the device."""
        images = self.cache.index_select(0, indices)
        return self.augment.apply(images, self.labels.index_select(0, indices), plan)

    def _build(self, indices: Tensor, plan: StaticPlan) -> None:
        device = self.cache.device
        # Each slot's graph gets its own memory pool. In a shared pool the
        # memory one capture freed (its intermediates) goes to the next
        # capture, which may place its outputs there: replaying slot 0 for
        # batch k + 2 would then overwrite batch k + 1 while the step reads it.
        # (While the slots shared one pool, a CUDA test found the graph
        # mode's batches unlike the op-by-op ones, by a varying fraction.)
        capture = self._capture or cuda_graph_capture()
        self.slots = []
        for _ in range(self.copies):
            slot_indices = indices.to(device).clone()
            slot_buffer = plan.buffer.to(device).clone()
            slot_plan = replace(plan, buffer=slot_buffer)
            replay, outputs = capture(lambda i=slot_indices, p=slot_plan: self._batch(i, p))
            self.slots.append(Slot(slot_indices, slot_buffer, replay, outputs))
        self.key = plan.key

    def __call__(self, indices: Tensor, plan: StaticPlan) -> tuple[Tensor, Tensor] | None:
        if self.failed or (self.key is not None and plan.key != self.key):
            return None
        if self.key is None:
            try:
                self._build(indices, plan)
            except Exception as error:  # noqa: BLE001 - any capture failure: run uncaptured, say why once
                self.failed = True
                first_line = str(error).splitlines()[0] if str(error) else ""
                warnings.warn(f"gpu_augment: capturing the augmentation as CUDA graphs failed "
                              f"({type(error).__name__}: {first_line}); it runs uncaptured", RuntimeWarning)
                return None
        slot = self.slots[self.turn]
        self.turn = (self.turn + 1) % len(self.slots)
        slot.indices.copy_(indices, non_blocking=True)
        slot.buffer.copy_(plan.buffer, non_blocking=True)
        slot.replay()
        if self._to_verify > 0:
            problem = self._check(slot, plan)
            if problem:
                self.failed = True
                warnings.warn(f"gpu_augment: the CUDA graphs' {problem}; the augmentation runs uncaptured",
                              RuntimeWarning)
                return None
        return slot.outputs

    def _check(self, slot: Slot, plan: StaticPlan) -> str | None:
        """What is wrong with the batch ``slot`` just made (or with the one
        before it), or None. Syncs with the device."""
        self._to_verify -= 1
        images, targets = slot.outputs
        expected = self._batch(slot.indices, replace(plan, buffer=slot.buffer))
        problem = None
        if self._kept is not None and not torch.equal(*self._kept):
            problem = "batch changed while the next one was made"
        elif not (same_images(images, expected[0]) and torch.allclose(targets, expected[1], atol=1e-6)):
            problem = "batch differs from the uncaptured one"
        self._kept = (images, images.clone()) if self._to_verify > 0 and problem is None else None
        return problem


def same_images(a: Tensor, b: Tensor) -> bool:
    """Two normalised batches the same up to float rounding: fewer than 0.1 %
    of the values apart by more than 0.01 grey level (a rounding tie of a
    resize pass moves a pixel by one), none by 3 or more. Syncs."""
    if a.shape != b.shape:
        return False
    diff = (a - b).abs() * 127.5  # grey levels (the normalised range is about 2 wide)
    return bool((diff > 0.01).float().mean() < 1e-3) and bool(diff.max() < 3)
