"""The streaming input path: for data sets whose decoded images do not fit
in memory, shards are read as training goes instead of decoded up front.

    shards --(reader processes: read, sha256-checked, parsed)--> encoded
    samples of this rank's current shuffle windows --(one work item per
    step: its PNGs and labels)--> DataLoader workers: decode (+ the CPU
    augmentation, or the GPU augmentation's plan) --> the same batches the
    in-memory pipelines make from a decoded cache

The order is ``StreamSchedule``'s (stream_schedule.py): exact epochs, equal
batches on every rank, a pure function of (seed, step). Work items are steps,
so the batches are the same whatever the number of loader workers, and a
resumed run starts the stream at its step (the checkpoint's ``stream``
field records the position and is checked on resume).

The shards are read (and each one's size and sha256 checked against the
manifest as it is read) by a few reader processes per rank, once per rank:
a bad shard stops the run with one line, before any of its samples is
used. Memory is bounded by the shuffle window: a rank holds the encoded
samples of the windows its next steps use and the next one (read ahead),
never the set.
"""

from __future__ import annotations

import itertools
import multiprocessing
from collections import ChainMap, OrderedDict
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from fracbuild.encode import decode_png
from fracbuild.location import Location
from fracbuild.manifest import sample_labels

from .. import data, resources
from ..errors import UserError
from .cpu import BatchTargets, seeded, train_transform
from .defaults import gpu_augment_class
from .device import DevicePipeline, StepPlan
from ..recipe import AugmentRecipe
from ..schedule import mix_seed
from .shard_reader import read_samples
from .staging import PinnedRing
from .stream_schedule import StreamSchedule

INPUT_MODES = ("auto", "stream", "memory")


# --- choosing --------------------------------------------------------------------
def decoded_bytes(location: Location, manifest: dict[str, Any]) -> int:
    """N x H x W x channels: the decoded set's size (reads the first shard)."""
    first = min(manifest["shards"], key=lambda s: s["first"])
    channels = data.probe_channels(location, first)
    return int(manifest["num_samples"]) * int(manifest["image_size"]) ** 2 * channels


def memory_budget(gigabytes: float | None) -> int:
    """Bytes the decoded set may take: as given (GB, 1e9 bytes), else half the memory available now."""
    if gigabytes is not None:
        if gigabytes <= 0:
            raise UserError(f"--memory-budget must be > 0 GB, got {gigabytes}")
        return int(gigabytes * 1e9)
    return resources.available_memory(torch.device("cpu")) // 2


def choose_input(requested: str, budget: int, location: Location, manifest: dict[str, Any],
                 log: Callable[[str], None] = lambda m: None) -> str:
    """'auto' | 'stream' | 'memory' -> 'stream' or 'memory'. auto: stream when
    the decoded set exceeds ``budget`` bytes."""
    if requested not in INPUT_MODES:
        raise UserError(f"--input must be one of {', '.join(INPUT_MODES)}, got {requested!r}")
    if requested != "auto":
        return requested
    nbytes = decoded_bytes(location, manifest)
    if nbytes <= budget:
        return "memory"
    log(f"decoded data set ({_size(nbytes)}) exceeds the memory budget ({_size(budget)}): "
        "streaming it from the shards")
    return "stream"


def _size(nbytes: int) -> str:
    return f"{nbytes / 1e9:.1f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.3g} MB"


def check_resume(payload: dict[str, Any], path: str, mode: str, schedule: Any, world_size: int) -> None:
    """UserError when a checkpoint cannot continue this run's input exactly:
    streamed and in-memory orders differ, and the streamed order depends on
    the number of ranks."""
    recorded = payload.get("stream")
    if mode == "stream" and not recorded:
        raise UserError(f"checkpoint {path} was trained from a decoded copy of the data set; "
                        "resume it with --input memory")
    if mode == "memory" and recorded:
        raise UserError(f"checkpoint {path} was trained streaming the shards; resume it with --input stream")
    if mode != "stream":
        return
    if payload.get("world_size") != world_size:
        raise UserError(f"checkpoint {path} streamed over {payload.get('world_size')} rank(s); the streamed order "
                        f"depends on the number of ranks, so resume it with {payload.get('world_size')}, "
                        f"not {world_size}")
    if schedule.rank == 0 and recorded != schedule.position(int(payload["step"])):
        raise UserError(f"checkpoint {path} stopped at stream position {recorded}, but this run puts step "
                        f"{payload['step']} at {schedule.position(int(payload['step']))}")


# --- reading ---------------------------------------------------------------------
@dataclass
class StepSamples:
    """One step's work item: this rank's samples, encoded.

    indices: int64 (b,); pngs: b PNG byte strings; labels: int64 (b,)."""

    step: int
    indices: np.ndarray
    pngs: list[bytes]
    labels: np.ndarray


class ShardFeed:
    """This rank's steps -> StepSamples, reading the shards of each shuffle
    window ``ahead`` windows before they are needed, and letting go of a
    window once the steps have passed it.

    readers: reader processes (shard_reader.read_samples; started fresh,
    "spawn", so that they are safe beside CUDA and see the environment as
    it is now); 0: reader threads in this process instead (tests)."""

    def __init__(self, location: Location, manifest: dict[str, Any], schedule: StreamSchedule, readers: int = 2,
                 ahead: int = 1):
        self.location = location
        self.shards = sorted(manifest["shards"], key=lambda s: s["first"])
        self.labels = sample_labels(manifest)  # int64 (num_samples,)
        self.width = manifest["layout"]["key_width"]
        self.schedule = schedule
        self.readers = max(0, readers)
        self.ahead = max(0, ahead)

    def _following(self, key: tuple[int, int]) -> tuple[int, int]:
        epoch, window = key[0], key[1] + 1
        while window >= self.schedule.window_count(epoch):  # a rank's run can be empty in a tiny set
            epoch, window = epoch + 1, 0
        return epoch, window

    def _pool(self) -> Executor:
        if self.readers == 0:
            return ThreadPoolExecutor(2, thread_name_prefix="shard-reader")
        return ProcessPoolExecutor(self.readers, mp_context=multiprocessing.get_context("spawn"))

    def _read(self, pool: Executor, shard_id: int) -> Future:
        shard = self.shards[shard_id]
        labels = self.labels[shard["first"]: shard["first"] + shard["count"]]
        return pool.submit(read_samples, self.location.url, shard, labels, self.width)

    def steps(self, steps: Iterable[int]) -> Iterator[StepSamples]:
        pool = self._pool()
        queued: OrderedDict[tuple[int, int], tuple[np.ndarray, list[Future]]] = OrderedDict()
        ready: dict[tuple[int, int], dict[int, bytes]] = {}
        reads: dict[int, Future] = {}  # the last queued window's shards: a shard across a window boundary is read once
        upcoming: tuple[int, int] | None = None

        def queue(key: tuple[int, int]) -> None:
            nonlocal reads
            samples = self.schedule.window_samples(*key)
            shard_ids = self.schedule.shards_of(samples)
            futures = {int(s): reads.get(int(s)) or self._read(pool, int(s)) for s in shard_ids}
            reads = futures
            queued[key] = (samples, list(futures.values()))

        try:
            for step in steps:
                needed = self.schedule.windows(step)
                if upcoming is None:
                    upcoming = needed[0]
                last = needed[-1]
                for _ in range(self.ahead):
                    last = self._following(last)
                while upcoming <= last:
                    queue(upcoming)
                    upcoming = self._following(upcoming)
                for key in list(ready):
                    if key < needed[0]:
                        del ready[key]
                for key in needed:
                    if key not in ready:
                        samples, futures = queued.pop(key)
                        parts = [f.result() for f in futures]
                        ready[key] = {int(i): next(p[i] for p in parts if i in p) for i in samples}
                for key in list(queued):  # windows passed over (a resume starts mid-stream)
                    if key < needed[0]:
                        del queued[key]
                indices = self.schedule.indices(step)
                found = ChainMap(*(ready[key] for key in needed))
                yield StepSamples(step, indices, [found[int(i)] for i in indices], self.labels[indices])
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


class _FeedSampler(Sampler):
    """The DataLoader's sampler: its 'indices' are the steps' work items."""

    def __init__(self, feed: ShardFeed, steps: Iterable[int]):
        self.feed, self.steps_ = feed, steps

    def __iter__(self) -> Iterator[StepSamples]:
        return self.feed.steps(self.steps_)


# --- decoding, in the workers ------------------------------------------------------
@dataclass
class DecodeFailure:
    """A worker's one-line error, raised as a UserError by the main process
    (an exception raised in a worker would arrive with its traceback)."""

    message: str


def decode_step(item: StepSamples, size: int, channels: int) -> np.ndarray | DecodeFailure:
    """The step's PNGs -> uint8 (b, H, W) (grayscale) or (b, H, W, 3)."""
    want = (size, size) if channels == 1 else (size, size, channels)
    out = np.empty((len(item.pngs), *want), dtype=np.uint8)
    for k, (index, png) in enumerate(zip(item.indices, item.pngs)):
        try:
            pixels = decode_png(png)
        except (ValueError, OSError) as error:
            return DecodeFailure(f"sample {int(index)} does not decode: {error}")
        if pixels.shape != want or pixels.dtype != np.uint8:
            return DecodeFailure(f"sample {int(index)} is {pixels.shape} {pixels.dtype}, expected {want} uint8")
        out[k] = pixels
    return out


def _checked(result: Any) -> Any:
    if isinstance(result, DecodeFailure):
        raise UserError(result.message)
    return result


class StreamCpuBatches(Dataset):
    """Work item -> (float32 (b, 3, S, S), float32 (b, C)): decoded, then
    timm's transform and Mixup seeded per step exactly as input_cpu.StepBatches
    seeds them (the same batch as the in-memory CPU path for the same indices)."""

    def __init__(self, recipe: AugmentRecipe, num_classes: int, seed: int, rank: int, size: int, channels: int):
        self.transform = train_transform(recipe)
        self.targets = BatchTargets(recipe, num_classes)
        self.seed, self.rank, self.size, self.channels = seed, rank, size, channels

    def __getitem__(self, item: StepSamples) -> tuple[Tensor, Tensor] | DecodeFailure:
        images = decode_step(item, self.size, self.channels)
        if isinstance(images, DecodeFailure):
            return images
        with seeded(mix_seed(self.seed, 0xA06, self.rank, item.step)):
            x = torch.stack([self.transform(Image.fromarray(image).convert("RGB")) for image in images])
            return self.targets(x, torch.from_numpy(item.labels))


def _as_is(item: Any) -> Any:
    return item


class StreamCpuPipeline:
    """The CPU path over the stream: batches from DataLoader workers, moved to ``device``."""

    name = "cpu-stream"

    def __init__(self, feed: ShardFeed, recipe: AugmentRecipe, num_classes: int, device: torch.device, seed: int,
                 workers: int, size: int, channels: int):
        self.feed = feed
        self.dataset = StreamCpuBatches(recipe, num_classes, seed, feed.schedule.rank, size, channels)
        self.device, self.workers, self.seed = device, workers, seed

    def position(self, step: int) -> dict[str, int]:
        return self.feed.schedule.position(step)

    def batches(self, start_step: int, stop_step: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        steps = range(start_step, stop_step) if stop_step is not None else itertools.count(start_step)
        loader = DataLoader(
            self.dataset, batch_size=None, sampler=_FeedSampler(self.feed, steps), num_workers=self.workers,
            collate_fn=_as_is, pin_memory=self.device.type == "cuda", prefetch_factor=4 if self.workers else None,
            # A private generator: creating the iterator must not consume the global RNG.
            generator=torch.Generator().manual_seed(mix_seed(self.seed, start_step)))
        for result in loader:
            x, y = _checked(result)
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


@dataclass
class StreamStep:
    """A decoded step for the device path: images uint8 (b, C, H, W) on the
    host, their labels int64 (b,), and the augmentation's plan."""

    images: Tensor
    labels: Tensor
    plan: StepPlan


class StreamPlans(Dataset):
    """Work item -> (images uint8 (b, C, H, W), labels int64 (b,), plan in
    wire form): decoded and planned in a worker, with the generator the
    in-memory device path seeds for the step (pipeline.StepPlanner)."""

    def __init__(self, augment: Any, seed: int, rank: int, size: int, channels: int):
        self.augment, self.seed, self.rank, self.size, self.channels = augment, seed, rank, size, channels

    def __getitem__(self, item: StepSamples) -> tuple[Tensor, Tensor, StepPlan] | DecodeFailure:
        images = decode_step(item, self.size, self.channels)
        if isinstance(images, DecodeFailure):
            return images
        x = torch.from_numpy(images)
        x = x[:, None] if x.dim() == 3 else x.permute(0, 3, 1, 2).contiguous()
        generator = torch.Generator().manual_seed(mix_seed(self.seed, 0xA06, self.rank, item.step))
        plan = StepPlan(item.step, torch.from_numpy(item.indices), self.augment.plan(tuple(x.shape), generator))
        return x, torch.from_numpy(item.labels), plan.to_wire()


class StreamDevicePipeline(DevicePipeline):
    """The GPU path over the stream: each step's decoded images go to the
    device and through ``GpuAugment`` exactly as the cached path's gathered
    images do (DevicePipeline's batches and overlap are reused). Graph mode
    needs a cache on the device, so it runs as static here."""

    name = "gpu-stream"

    def __init__(self, feed: ShardFeed, recipe: AugmentRecipe, num_classes: int, device: torch.device, seed: int,
                 size: int, channels: int, augment_cls: Any | None = None, workers: int = 0, overlap: bool = True,
                 augment_options: dict[str, Any] | None = None, augment_mode: str = "op-by-op",
                 log: Callable[[str], None] = lambda m: None):
        augment_cls = augment_cls or gpu_augment_class()
        if augment_cls is None:
            raise UserError("the GPU augmentation (fractrain.gpu_augment) is not available")
        options = dict(augment_options or {})
        if augment_mode == "graph":
            log("GPU augment mode graph needs the image cache on the device; streaming runs it as static")
        if augment_mode != "op-by-op":
            options["static"] = True
        self.feed = feed
        self.schedule = feed.schedule
        self.device, self.seed, self.workers = device, seed, workers
        self.overlap = overlap and device.type == "cuda"
        self.augment = augment_cls(recipe, num_classes, device, **options)
        self.dataset = StreamPlans(self.augment, seed, feed.schedule.rank, size, channels)
        self._staging = PinnedRing(8) if device.type == "cuda" else None
        self.graphed = None

    def position(self, step: int) -> dict[str, int]:
        return self.schedule.position(step)

    def plans(self, steps: Iterable[int]) -> Iterator[StreamStep]:
        stage = self._staging.stage if self._staging is not None else None
        loader = DataLoader(
            self.dataset, batch_size=None, sampler=_FeedSampler(self.feed, steps), num_workers=self.workers,
            collate_fn=_as_is, pin_memory=False, prefetch_factor=2 if self.workers else None,
            generator=torch.Generator().manual_seed(0))
        for result in loader:
            images, labels, plan = _checked(result)
            if self.device.type == "cuda":
                images = images.pin_memory()
            yield StreamStep(images, labels, plan.from_wire(stage))

    def run(self, step: StreamStep) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        images = step.images.to(self.device, non_blocking=True)
        labels = step.labels.to(self.device, non_blocking=True)
        return self.augment.apply(images, labels, step.plan.augment)


def build_pipeline(path: str, location: Location, manifest: dict[str, Any], schedule: StreamSchedule,
                   recipe: AugmentRecipe, num_classes: int, device: torch.device, seed: int, workers: int, *,
                   augment_cls: Any | None = None, augment_options: dict[str, Any] | None = None,
                   augment_mode: str = "op-by-op", log: Callable[[str], None] = lambda m: None,
                   readers: int = 2):
    """The streaming pipeline for input path ``path`` ('cpu' or 'gpu')."""
    feed = ShardFeed(location, manifest, schedule, readers=readers)
    first = min(manifest["shards"], key=lambda s: s["first"])
    channels, size = data.probe_channels(location, first), int(manifest["image_size"])
    if path == "gpu":
        return StreamDevicePipeline(feed, recipe, num_classes, device, seed, size, channels, augment_cls=augment_cls,
                                    workers=workers, augment_options=augment_options, augment_mode=augment_mode,
                                    log=log)
    return StreamCpuPipeline(feed, recipe, num_classes, device, seed, workers, size, channels)
