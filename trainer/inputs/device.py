"""The device input path: the decoded data set cached as uint8 on the
device, each step planned on the host (its indices and augmentation draws,
``StepPlan``, sent from plan workers in a compact wire format) and
augmented there by ``gpu_augment.GpuAugment``."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError
from ..interrupts import ignore_in_worker
from ..recipe import AugmentRecipe
from ..schedule import EpochSchedule, mix_seed
from .staging import PinnedRing
from .defaults import check_augment_mode, gpu_augment_class


@dataclass
class StepPlan:
    """Everything the host decides for one step of the device path: the
    batch's sample indices int64 (b,) and the augmentation's plan (whatever
    ``augment.plan`` returns; GpuAugment's is one packed tensor)."""

    step: int
    indices: Tensor
    augment: Any

    def to_wire(self) -> "StepPlan":
        """The plan with its tensors (the indices, the augmentation plan's
        packed ``buffer``) as numpy arrays, for a worker to send: pickled by
        value through the pipe, where a tensor would travel as a
        shared-memory file descriptor (slower for a few hundred kB, and
        freed through the receiving process)."""
        plan = self.augment
        if isinstance(getattr(plan, "buffer", None), Tensor):
            plan = replace(plan, buffer=plan.buffer.numpy())
        return StepPlan(self.step, self.indices.numpy(), plan)

    def from_wire(self, stage: Callable[[list[np.ndarray]], list[Tensor]] | None = None) -> "StepPlan":
        """to_wire undone in the receiving process: its arrays as tensors,
        made by ``stage`` (arrays -> tensors, e.g. staging.PinnedRing.stage:
        copies in pinned memory) or viewing the arrays."""
        plan = self.augment
        packed = isinstance(getattr(plan, "buffer", None), np.ndarray)
        arrays = [self.indices, plan.buffer] if packed else [self.indices]
        tensors = stage(arrays) if stage is not None else [torch.from_numpy(a) for a in arrays]
        return StepPlan(self.step, tensors[0], replace(plan, buffer=tensors[1]) if packed else plan)


@dataclass
class StepPlanner(torch.utils.data.Dataset):
    """Step -> StepPlan: host work only, picklable (no device tensors), so
    that DataLoader workers can plan ahead (as a map-style data set over
    steps). sample_shape: (C, H, W) of the cached images."""

    schedule: EpochSchedule
    augment: Any
    seed: int
    sample_shape: tuple[int, int, int]

    def __getitem__(self, step: int) -> StepPlan:
        indices = torch.from_numpy(self.schedule.indices(step))
        # A CPU generator: GpuAugment draws its choices on the host.
        generator = torch.Generator().manual_seed(mix_seed(self.seed, 0xA06, self.schedule.rank, step))
        return StepPlan(step, indices, self.augment.plan((len(indices), *self.sample_shape), generator))


def _as_is(item: Any) -> Any:  # the DataLoader's collate: plans are not batched
    return item


@dataclass
class _WirePlanner(torch.utils.data.Dataset):
    """The planner as DataLoader workers run it: a tuple of steps -> their
    plans in wire form (StepPlan.to_wire), sent as one message."""

    planner: StepPlanner

    def __getitem__(self, steps: tuple[int, ...]) -> list[StepPlan]:
        return [self.planner[step].to_wire() for step in steps]


# Plans per DataLoader message (DevicePipeline's default). Each message
# costs the training thread a fixed share (the index queue's feeder thread,
# the receive and its locks), whatever its size: benchmarks/plan_fetch_bench.py
# measures it (benchmarks/RESULTS.md).
PLANS_PER_MESSAGE = 8


@dataclass
class _StepChunks:
    """``steps`` (any iterable of step numbers, endless too) as consecutive
    tuples of up to ``size``: the plan workers' sampler."""

    steps: Iterable[int]
    size: int

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        steps = iter(self.steps)
        while chunk := tuple(itertools.islice(steps, self.size)):
            yield chunk


class DevicePipeline:
    """The GPU path: the decoded data set cached as uint8 on the device (or
    in pinned host memory when it does not fit), batches gathered by the
    schedule's indices and augmented there by ``GpuAugment``.

    Each step is planned on the host (its indices and every augmentation
    choice, from a fresh generator seeded with ``(seed, rank, step)``), then
    worked on the device: batches are a pure function of the step.

    augment_options: keyword arguments of ``augment_cls`` (GpuAugment's
    ``fuse``, ``resize_precision``).

    augment_mode (AUGMENT_MODES): "op-by-op" runs each op on the samples
    that drew it; "static" lays every batch out in the same shapes (one
    compiled graph with ``fuse``); "graph" also captures that as CUDA graphs
    (gpu_augment/graphs.py), replayed each step: the least host time. Same
    batches in every mode, up to float rounding. In graph mode a batch lives
    in one of two fixed buffers, rewritten two batches later: a caller that
    keeps batches longer than the step after (not the training loop) clones them.

    plan_workers: DataLoader worker processes that plan steps ahead, so that
    the training thread only launches kernels (planning is several ms of
    host time per batch; 0: plan on the training thread), sending
    ``plans_per_message`` consecutive steps' plans at a time. The batches
    are the same whatever the counts.

    staging_slots: on CUDA, the plans' host-to-device copies read from a
    ring of this many buffers pinned once (staging.PinnedRing).

    cache_on_device: keep the cache in GPU memory (None: when it takes under
    half of the free memory), else in pinned host memory.

    On CUDA with ``overlap`` (the default), batch k + 1 is augmented on a
    side stream while the caller trains on batch k, so the augmentation's
    kernels fill the gaps the model's leave instead of running between steps
    (same batches, bit for bit: only the timing changes).
    """

    name = "gpu"

    def __init__(self, images: np.ndarray, labels: np.ndarray, schedule: EpochSchedule, recipe: AugmentRecipe,
                 num_classes: int, device: torch.device, seed: int, augment_cls: Any | None = None,
                 log=lambda m: None, overlap: bool = True, cache_on_device: bool | None = None,
                 plan_workers: int = 0, augment_options: dict[str, Any] | None = None,
                 augment_mode: str = "op-by-op", staging_slots: int = 8,
                 plans_per_message: int = PLANS_PER_MESSAGE):
        augment_cls = augment_cls or gpu_augment_class()
        if augment_cls is None:
            raise UserError("the GPU augmentation (fractrain.gpu_augment) is not available")
        if plan_workers < 0:
            raise UserError(f"plan workers must be >= 0, got {plan_workers}")
        if plans_per_message < 1:
            raise UserError(f"plans per message must be >= 1, got {plans_per_message}")
        self.plans_per_message = plans_per_message
        cache = torch.from_numpy(np.ascontiguousarray(images))
        if cache.dim() == 4:  # (N, H, W, 3) -> (N, 3, H, W)
            cache = cache.permute(0, 3, 1, 2).contiguous()
        self.device = device
        self.overlap = overlap and device.type == "cuda"
        self.plan_workers = plan_workers
        self.schedule = schedule
        self.seed = seed
        sample_shape = tuple(cache.shape[1:]) if cache.dim() == 4 else (1, *cache.shape[1:])
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if cache_on_device is None:  # leave room for the model, activations and the allocator
                cache_on_device = cache.numel() < free * 0.5
            if cache_on_device:
                cache = cache.to(device)
            else:
                log(f"image cache ({cache.numel() / 1e9:.1f} GB) kept in pinned host memory: "
                    f"{free / 1e9:.1f} GB free on {device}")
                cache = cache.pin_memory()
        self.cache = cache
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
        options = dict(augment_options or {})
        check_augment_mode(augment_mode, device)
        if augment_mode != "op-by-op":
            options["static"] = True
        self.augment = augment_cls(recipe, num_classes, device, **options)
        self.planner = StepPlanner(schedule, self.augment, seed, sample_shape)
        # Plans reach the device through buffers pinned once (on CUDA).
        self._staging = PinnedRing(staging_slots) if device.type == "cuda" else None
        self.graphed = None
        if augment_mode == "graph":
            from .gpu_augment.graphs import GraphedAugment

            self.graphed = GraphedAugment(self.augment, cache, self.labels) if cache.is_cuda else None

    # -- host ------------------------------------------------------------------

    def plans(self, steps: Iterable[int]) -> Iterator[StepPlan]:
        """The steps' plans in order: made here, or ahead by ``plan_workers``
        DataLoader workers; on CUDA their tensors in the pinned ring (valid
        until ``staging_slots`` more plans have been queued)."""
        stage = self._staging.stage if self._staging is not None else None
        if self.plan_workers == 0:
            for step in steps:
                plan = self.planner[step]
                yield plan.to_wire().from_wire(stage) if stage is not None else plan
            return
        # The loader's own generator: its workers' base seed would otherwise be
        # drawn from the global RNG, shifting the model's dropout draws (a
        # resumed run would then differ from an uninterrupted one). No pin
        # thread: it would contend for the GIL with the training thread (a
        # profile showed ms per step waiting in the loader); the plans come
        # by value and are copied here into buffers pinned once.
        loader = torch.utils.data.DataLoader(
            _WirePlanner(self.planner), batch_size=None, sampler=_StepChunks(steps, self.plans_per_message),
            num_workers=self.plan_workers, collate_fn=_as_is, pin_memory=False, prefetch_factor=2,
            generator=torch.Generator().manual_seed(0), worker_init_fn=ignore_in_worker)
        for plans in loader:
            for plan in plans:
                yield plan.from_wire(stage)

    # -- device ----------------------------------------------------------------

    def run(self, plan: StepPlan) -> tuple[Tensor, Tensor]:
        """A StepPlan -> the step's (images, soft targets) on the device
        (in graph mode: in a slot's memory, valid for the next step)."""
        if self.graphed is not None and getattr(plan.augment, "key", None) is not None:
            batch = self.graphed(plan.indices, plan.augment)
            if batch is not None:
                return batch
        indices = plan.indices.to(self.device, non_blocking=True)
        if self.cache.device.type == self.device.type:  # on the device ("cuda" and "cuda:0" alike)
            images = self.cache.index_select(0, indices)
        else:
            # Gather into pinned memory, so that the copy is asynchronous (the
            # caching host allocator keeps the buffer until the copy is done).
            batch = torch.empty((len(plan.indices), *self.cache.shape[1:]), dtype=self.cache.dtype,
                                pin_memory=True)
            images = torch.index_select(self.cache, 0, plan.indices, out=batch).to(self.device, non_blocking=True)
        if images.dim() == 3:
            images = images[:, None]
        return self.augment.apply(images, self.labels.index_select(0, indices), plan.augment)

    def batches(self, start_step: int, stop_step: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        steps = range(start_step, stop_step) if stop_step is not None else itertools.count(start_step)
        plans = self.plans(steps)
        if self.overlap:
            yield from self._overlapped(plans)
            return
        for plan in plans:
            batch = self.run(plan)
            if self._staging is not None:
                self._staging.queued()
            yield batch

    def _overlapped(self, plans: Iterator[StepPlan]) -> Iterator[tuple[Tensor, Tensor]]:
        """run(plan) for each plan, each on a side stream one step ahead."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))  # the cache upload

        def launch(plan: StepPlan) -> tuple[Tensor, Tensor, torch.cuda.Event]:
            if self.graphed is not None:
                # A graph slot is rewritten in place: wait for the step that
                # read it (queued on the training stream before this call).
                side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                x, y = self.run(plan)
                ready = torch.cuda.Event()
                ready.record(side)
            if self._staging is not None:
                self._staging.queued(side)
            return x, y, ready

        pending = None
        for plan in plans:
            following = launch(plan)
            if pending is not None:
                yield self._hand_over(*pending)
            pending = following
        if pending is not None:
            yield self._hand_over(*pending)

    def _hand_over(self, x: Tensor, y: Tensor, ready: "torch.cuda.Event") -> tuple[Tensor, Tensor]:
        """Make the caller's stream wait for the batch, and keep the batch's
        memory from being reused by the side stream while the caller works."""
        main = torch.cuda.current_stream(self.device)
        main.wait_event(ready)
        x.record_stream(main)
        y.record_stream(main)
        return x, y
