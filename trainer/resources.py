"""Whether a run fits the machine, checked before the data decodes and the
first step runs: the memory a training step takes (measured on the model
itself) against the memory available, so that a batch too large is one line
that says what fits instead of a kernel OOM kill minutes later.

The estimate, per rank, in bytes:

    fixed      weights + gradients + optimizer state (AdamW: 2 per trained weight),
               the decoded images where they stay in RAM, a worker's share
    per sample activations saved for the backward pass (measured on a batch
               of 1 and of 2 through ``saved_tensors_hooks``) x BACKWARD_FACTOR,
               plus the input path's batches in flight

and it must stay under HEADROOM of the memory available (the cgroup's limit
less its use, or MemAvailable; on CUDA the device's free memory).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from .errors import UserError

# The backward pass holds the activations' gradients beside the activations
# themselves (a layer at a time), and autograd's workspace: the peak grows
# faster with the batch than the saved activations alone (benchmarks/RESULTS.md).
BACKWARD_FACTOR = 1.3
HEADROOM = 0.85  # of the available memory: the allocator's fragmentation, the interpreter, the page cache
OPTIMIZER_COPIES = 4  # weights, gradients and two AdamW moments, float32 each
PREFETCH = 4  # batches each CPU-path DataLoader worker keeps ready (inputs.cpu.CpuPipeline)
WORKER_BYTES = 300 << 20  # a DataLoader worker's own memory (its interpreter and transforms)
GB = 1e9


@dataclass(frozen=True)
class Estimate:
    """Bytes one rank needs: ``fixed + per_sample * local_batch``."""

    fixed: int
    per_sample: int
    parts: dict[str, int] = field(default_factory=dict)  # name -> bytes at the requested batch

    def total(self, local_batch: int) -> int:
        return self.fixed + self.per_sample * local_batch


def available_memory(device: torch.device, local_ranks: int = 1) -> int:
    """Bytes this rank may use: the CUDA device's free memory, or the host's
    (the lower of the cgroup's room and MemAvailable) shared by the node's ranks."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    host = _mem_available()
    room = _cgroup_room()
    if room is not None:
        host = min(host, room)
    return host // max(1, local_ranks)


def _mem_available() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _cgroup_room(root: str = "/sys/fs/cgroup") -> int | None:
    """The cgroup's memory limit less what it uses (its reclaimable page
    cache counted as free), cgroup v2 or v1 under ``root``; None without a limit."""
    for limit_file, usage_file, stat_file, cache_key in (
            ("memory.max", "memory.current", "memory.stat", "inactive_file"),
            ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes", "memory/memory.stat",
             "total_inactive_file")):
        limit_file, usage_file, stat_file = (os.path.join(root, name) for name in (limit_file, usage_file, stat_file))
        try:
            with open(limit_file, encoding="ascii") as handle:
                raw = handle.read().strip()
            if raw == "max" or int(raw) >= 1 << 60:
                return None
            with open(usage_file, encoding="ascii") as handle:
                used = int(handle.read().strip())
        except (OSError, ValueError):
            continue
        cache = 0
        try:
            with open(stat_file, encoding="ascii") as handle:
                for line in handle:
                    key, _, value = line.partition(" ")
                    if key == cache_key:
                        cache = int(value)
        except (OSError, ValueError):
            pass
        return max(0, int(raw) - used + cache)
    return None


def saved_activation_bytes(model: nn.Module, input_size: int, device: torch.device, batch: int,
                           autocast: Callable = lambda: torch.autocast("cpu", enabled=False)) -> int:
    """Bytes of the tensors autograd saves for the backward pass of one
    forward on ``batch`` zero images (float32 (batch, 3, input_size,
    input_size)); storages counted once, the model's own weights not at all."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        try:
            storage = tensor.untyped_storage()
        except (RuntimeError, NotImplementedError):  # tensors without storage
            return tensor
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = max(saved.get(storage.data_ptr(), 0), storage.nbytes())
        return tensor

    # The model is left as it was: its buffers (BatchNorm statistics) and the
    # generators (drop-path draws) are restored after the forward pass.
    buffers = {name: buffer.detach().clone() for name, buffer in model.named_buffers()}
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        x = torch.zeros(batch, 3, input_size, input_size, device=device)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), autocast():
            out = model(x)
        del out, x
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            buffer.copy_(buffers[name])
    return sum(saved.values())


def estimate(model: nn.Module, *, input_size: int, device: torch.device, path: str, workers: int,
             local_batch: int, dataset_bytes: int, dataset_in_ram: bool,
             autocast: Callable = lambda: torch.autocast("cpu", enabled=False)) -> Estimate:
    """What one rank needs for a training step on ``local_batch`` samples.

    path: "cpu" or "gpu" (the input path); dataset_bytes: the decoded images
    (N x H x W x C uint8), counted on the host when ``dataset_in_ram``.
    """
    # Batches of 2 and 4: BatchNorm in training mode needs more than one sample.
    two = saved_activation_bytes(model, input_size, device, 2, autocast)
    four = saved_activation_bytes(model, input_size, device, 4, autocast)
    activations = max(math.ceil((four - two) / 2), math.ceil(four / 4)) * BACKWARD_FACTOR
    # Every weight once; a trained one also has its gradient and optimizer moments (a probe freezes most).
    model_bytes = 4 * sum(p.numel() * (OPTIMIZER_COPIES if p.requires_grad else 1) for p in model.parameters())
    sample = 3 * input_size * input_size * 4  # one float32 model input
    if path == "cpu":
        in_flight = sample * (workers * PREFETCH + 2)  # workers' queues, the step's batch and its copy
        host_fixed = workers * WORKER_BYTES
    else:
        in_flight = sample * 8  # crop, resize, RandAugment, erasing and mixing buffers of one batch
        host_fixed = 0
    images = dataset_bytes if dataset_in_ram and device.type == "cpu" else 0
    fixed = model_bytes + host_fixed + images
    per_sample = int(activations + in_flight)
    parts = {"weights and optimizer": model_bytes, "activations": int(activations * local_batch),
             "input batches": int(in_flight * local_batch + host_fixed)}
    if images:
        parts["decoded images"] = images
    return Estimate(fixed=int(fixed), per_sample=per_sample, parts=parts)


def check_fits(need: Estimate, available: int, *, global_batch: int, world_size: int, even: bool,
               device: torch.device) -> None:
    """UserError, one line, when ``need`` at the requested batch exceeds
    HEADROOM x ``available``: it says the largest global batch that fits,
    or to use a GPU (or a smaller model) when not even one does."""
    local = global_batch // world_size
    budget = int(available * HEADROOM)
    if need.total(local) <= budget:
        return
    step = 2 if even else 1
    fitting = (budget - need.fixed) // need.per_sample if need.per_sample else 0
    fitting = fitting // step * step
    shown = ", ".join(f"{name} {value / GB:.1f}" for name, value in need.parts.items() if value >= 0.05 * GB)
    where = "GPU" if device.type == "cuda" else "host"
    head = (f"--batch-size {global_batch} needs about {need.total(local) / GB:.1f} GB of {where} memory per rank "
            f"({shown or 'in all'}), {available / GB:.1f} GB are available")
    if fitting >= step:
        fix = f"use --batch-size {fitting * world_size} or less"
        if device.type == "cpu":
            fix += ", or a GPU"
    elif device.type == "cpu":
        fix = "use a GPU (or a smaller --model)"
    else:
        fix = "use a smaller --model, --input-size or a GPU with more memory"
    raise UserError(f"{head}: {fix}")
