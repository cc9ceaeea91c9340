"""``fractrain bench``: images/s of the full training step with three inputs:

* model: a synthetic batch already on the device (the model-bound ceiling);
* gpu: the device input path (cached uint8 images + GpuAugment), if available,
  each batch augmented on a side stream while the step before trains;
* gpu-serial (on request): the same, without the side stream;
* cpu: the CPU input path (timm transforms in DataLoader workers).

Each is timed end to end through the same optimizer step as training
(autocast, backward, AdamW), as the median over timed windows after a
warm-up (which also absorbs torch.compile's compilation). The windows of
the model and GPU paths take turns (A B, B A, ...), so that the machine's
drift during a run (clocks, other tenants: a path's rate can move by a
third between runs) weighs on each alike; the CPU path, whose
workers work ahead, is timed after them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from . import data, inputs, model as models, step_profile
from .config import TrainConfig
from .inputs.cpu import ArraySource, CpuPipeline
from .inputs import defaults
from .inputs.device import DevicePipeline
from .inputs.synthetic import SyntheticPipeline
from .loop import Stepper, resolve_precision
from .optim import create_optimizer
from .run import single_process
from .schedule import EpochSchedule

PATHS = ("model", "gpu", "gpu-serial", "cpu")


def result_key(path: str) -> str:
    """The result's images/s key of a path: model_images_per_s, gpu_augment_images_per_s, ..."""
    return "model_images_per_s" if path == "model" else f"{path.replace('-', '_')}_augment_images_per_s"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def warm_up(stepper: Stepper, iterator, warmup: int, device: torch.device) -> None:
    """``warmup`` untimed steps (torch.compile compiles in the first), then a sync."""
    for _ in range(warmup):
        stepper(*next(iterator))
    _sync(device)


class _GcClock:
    """Python's garbage collections while installed (``with``): their count
    and seconds, read at any time. A pause of the training thread that its
    own timings would put on whatever it was doing."""

    def __init__(self):
        self.collections = 0
        self.seconds = 0.0
        self._started: float | None = None

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            self.collections += 1
            self.seconds += time.perf_counter() - self._started
            self._started = None

    def __enter__(self) -> "_GcClock":
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc) -> None:
        gc.callbacks.remove(self._callback)


def time_window(stepper: Stepper, iterator, steps: int, batch: int, device: torch.device,
                host: dict[str, list[float]] | None = None) -> float:
    """Images/s of ``steps`` steps, from a synced device to a synced device.

    host: when given, gets each step's training-thread times in ms (lists
    under "input_wall", "input_cpu": fetching the batch; "step_wall",
    "step_cpu": launching the step): where the host's time goes without a
    profiler's overhead. Wall well above CPU time means waiting (for plan
    workers, the GIL, another thread such as autograd's, or the device).
    Also, per window, "gc_ms" and "gc_count": Python's garbage collections
    per step (inside the times above)."""
    clock, cpu_clock = time.perf_counter, time.thread_time
    with _GcClock() as collections:
        started = clock()
        for _ in range(steps):
            t0, c0 = clock(), cpu_clock()
            inputs = next(iterator)
            t1, c1 = clock(), cpu_clock()
            stepper(*inputs)
            if host is not None:
                t2, c2 = clock(), cpu_clock()
                for key, value in (("input_wall", t1 - t0), ("input_cpu", c1 - c0),
                                   ("step_wall", t2 - t1), ("step_cpu", c2 - c1)):
                    host.setdefault(key, []).append(value * 1e3)
        _sync(device)
        elapsed = clock() - started
    if host is not None:
        host.setdefault("gc_ms", []).append(collections.seconds * 1e3 / steps)
        host.setdefault("gc_count", []).append(collections.collections / steps)
    return steps * batch / elapsed


def window_order(paths: list, window: int) -> list:
    """The paths (any items) in the order window ``window`` times them: forwards, then
    backwards (A B, B A, A B, ...), so that a drift of the machine's speed
    during the run (clocks, other tenants) weighs on every path alike."""
    return list(paths) if window % 2 == 0 else list(reversed(paths))


def step_stream(high_priority: bool, device: torch.device):
    """A context running the training steps on a CUDA stream of the highest
    priority (when ``high_priority`` on CUDA; else nothing changes). The GPU
    path augments on a side stream of normal priority: with the step's
    kernels ahead in the queue, the augmentation's blocks take the SMs the
    model leaves idle (between its kernels, in their tails) rather than
    delaying its kernels."""
    if not high_priority or device.type != "cuda":
        return contextlib.nullcontext()
    low, high = torch.cuda.Stream.priority_range()
    return torch.cuda.stream(torch.cuda.Stream(device, priority=min(low, high)))


@dataclass
class _TimedPath:
    """One input path being timed: its source, its own model and optimizer,
    the batches' iterator, and what its windows found."""

    name: str
    source: Any
    stepper: Stepper
    batches: Any
    iterator: Any
    stream: Any  # the context its steps run in (step_stream)
    host: dict[str, list[float]] = field(default_factory=dict)
    rates: list[float] = field(default_factory=list)


def _profile_path(results: dict[str, Any], timed: _TimedPath, device: torch.device, profile_steps: int,
                  trace_dir: str | None, host_profile_steps: int, log: Callable[[str], None]) -> None:
    """After the timed windows: the profiles asked for of one path."""
    if profile_steps:
        trace = os.path.join(trace_dir, f"trace-{timed.name}.json.gz") if trace_dir else None
        with timed.stream:
            summary = step_profile.profile_steps(timed.stepper, timed.iterator, profile_steps, device, trace)
        results.setdefault("profile", {})[timed.name] = summary
        for line in step_profile.describe(timed.name, summary):
            log(line)
    if host_profile_steps:
        with timed.stream:
            summary = step_profile.host_profile(timed.stepper, timed.iterator, host_profile_steps)
        results.setdefault("host_profile", {})[timed.name] = summary
        for line in step_profile.describe_host(timed.name, summary):
            log(line)


def run(config: TrainConfig, *, steps: int = 20, warmup: int = 10, windows: int = 3,
        paths: tuple[str, ...] = ("model", "gpu", "cpu"), resize_precision: str | None = None,
        profile_steps: int = 0, trace_dir: str | None = None, host_profile_steps: int = 0,
        high_priority_step: bool = False, log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Time each of ``paths`` for the pre-training run ``config`` describes
    (its data set, model, optimizer, recipe, batch size, device, precision,
    compile, workers and GPU augmentation settings); returns the result dict
    (images/s per path, the ratios, each window's rate). profile_steps: after
    the timed windows, profile that many more steps of each path
    (step_profile; summaries under "profile", chrome traces in trace_dir when
    given). host_profile_steps: then that many under cProfile
    (step_profile.host_profile; under "host_profile"). high_priority_step: on
    CUDA, run the steps on a stream of the highest priority (step_stream).
    resize_precision: GpuAugment's (None: its default)."""
    ctx = single_process(config.run.device)
    precision = resolve_precision(config.run.precision, ctx.device)
    assert config.run.workers is not None, "bench needs config.run.workers resolved"
    gpu_cls = defaults.gpu_augment_class()
    # The bench times each path it is asked for: the device path's settings
    # are those pretrain decides for it.
    choice = inputs.choose_input(dataclasses.replace(config.run, input_path="gpu" if gpu_cls else "cpu"),
                                 ctx.device, config.run.workers, gpu_cls)
    fuse, mode, workers = choice.fuse_augment, choice.gpu_augment_mode, choice.workers
    dataset = data.load(config.data.shards, log=log)
    num_classes = dataset.num_classes
    recipe = config.recipe()
    batch_size, input_size, compile = config.batch_size, recipe.input_size, config.run.compile
    schedule = EpochSchedule(dataset.num_samples, batch_size, seed=0)
    name = models.resolve_name(config.model.name)
    augment_options: dict[str, Any] = {"fuse": fuse}
    if resize_precision is not None:
        augment_options["resize_precision"] = resize_precision

    def stepper_for() -> Stepper:
        torch.manual_seed(0)
        net = models.create(name, num_classes, input_size, config.model.drop_path, config.model.kwargs)
        net.to(ctx.device).train()
        optimizer = create_optimizer(net, config.optim, batch_size)
        from timm.loss import SoftTargetCrossEntropy

        return Stepper(net, optimizer, SoftTargetCrossEntropy(), ctx, precision, compile=compile)

    results: dict[str, Any] = {
        "model": name, "device": str(ctx.device), "batch_size": batch_size, "input_size": input_size,
        "compile": compile, "fuse_augment": fuse, "gpu_augment_mode": mode, "gpu_resize": resize_precision,
        "plan_workers": choice.plan_workers, "high_priority_step": high_priority_step,
        "precision": precision, "workers": workers, "num_samples": dataset.num_samples,
        "image_size": dataset.image_size,
        "model_images_per_s": None, "gpu_augment_images_per_s": None, "cpu_augment_images_per_s": None,
    }
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)
    # The paths whose input is made on the device (model, gpu, gpu-serial) are
    # set up and warmed up first, then their timed windows take turns
    # (window_order): each one's figure then comes from the same stretch of
    # the run. The CPU path goes after them, on its own: its DataLoader
    # workers work ahead, so beside the others they would both take the
    # host's cores during the other paths' windows and start each of their
    # own with a queue of batches made in the meantime. Each path keeps its
    # own model and optimizer.
    total = warmup + steps * windows + profile_steps + host_profile_steps
    timed: list[_TimedPath] = []
    for group in ([p for p in paths if p != "cpu"], [p for p in paths if p == "cpu"]):
        entries = []
        for path in group:
            if path == "model":
                source = SyntheticPipeline(batch_size, input_size, num_classes, ctx.device)
            elif path in ("gpu", "gpu-serial"):
                if gpu_cls is None:
                    log("bench: GPU augmentation not available; skipped")
                    continue
                source = DevicePipeline(dataset.images, dataset.labels, schedule, recipe, num_classes, ctx.device,
                                        seed=0, augment_cls=gpu_cls, log=log, overlap=path == "gpu",
                                        plan_workers=choice.plan_workers, augment_options=augment_options,
                                        augment_mode=mode)
                results["gpu_resize"] = source.augment.resize_precision  # the one in use
            elif path == "cpu":
                source = CpuPipeline(ArraySource(dataset.images, dataset.labels), schedule, recipe, num_classes,
                                     ctx.device, seed=0, workers=workers)
            else:
                raise ValueError(f"unknown path {path!r}")
            stream = step_stream(high_priority_step, ctx.device)
            batches = source.batches(0, total)
            with stream:
                entry = _TimedPath(path, source, stepper_for(), batches, iter(batches), stream)
                warm_up(entry.stepper, entry.iterator, warmup, ctx.device)
            entries.append(entry)
        for window in range(windows):
            for entry in window_order(entries, window):
                with entry.stream:
                    entry.rates.append(time_window(entry.stepper, entry.iterator, steps, batch_size, ctx.device,
                                                   entry.host))
        timed += entries
    for entry in timed:
        _profile_path(results, entry, ctx.device, profile_steps, trace_dir, host_profile_steps, log)
        if hasattr(entry.batches, "close"):
            entry.batches.close()  # stops the DataLoader workers now
        results.setdefault("host_ms", {})[entry.name] = {
            k: round(statistics.median(v), 3) for k, v in entry.host.items()}
        results.setdefault("windows_images_per_s", {})[entry.name] = [round(r, 1) for r in entry.rates]
        rate = results[result_key(entry.name)] = round(statistics.median(entry.rates), 1)
        ms = results["host_ms"][entry.name]
        log(f"bench {name} {entry.name:>5}: {rate:,.0f} images/s (training thread per step, median ms: input "
            f"{ms['input_wall']:.2f} wall / {ms['input_cpu']:.2f} cpu, step {ms['step_wall']:.2f} / {ms['step_cpu']:.2f}; "
            f"garbage collection {ms['gc_ms']:.2f} ms in {ms['gc_count']:.2f} runs)")
    del timed
    m, g, c = (results["model_images_per_s"], results["gpu_augment_images_per_s"], results["cpu_augment_images_per_s"])
    results["gpu_vs_model"] = round(g / m, 3) if g and m else None
    results["cpu_vs_model"] = round(c / m, 3) if c and m else None
    results["gpu_vs_cpu"] = round(g / c, 2) if g and c else None
    if "gpu-serial" in paths:
        serial = results.get("gpu_serial_augment_images_per_s")
        results["gpu_serial_vs_model"] = round(serial / m, 3) if serial and m else None
    results["peak_gpu_memory_gb"] = (round(torch.cuda.max_memory_allocated(ctx.device) / 2**30, 2)
                                     if ctx.device.type == "cuda" else None)
    return results
