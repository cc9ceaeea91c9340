"""The input path's defaults, decided from what was asked and the device:
which path (cpu or gpu), plan workers, fused kernels, the GPU augmentation's
mode."""

from __future__ import annotations

import importlib
from typing import Any

import torch

from ..errors import UserError


def gpu_augment_class() -> Any | None:
    """``GpuAugment`` from ``fractrain.gpu_augment``, or None if that module
    is absent or broken."""
    try:
        module = importlib.import_module("..gpu_augment", __package__)
    except Exception:  # noqa: BLE001 - an absent or broken optional module means "not available"
        return None
    return getattr(module, "GpuAugment", None)


def choose(requested: str, device: torch.device) -> str:
    """'auto' | 'cpu' | 'gpu' -> 'cpu' or 'gpu'. auto: gpu when the device is
    CUDA and the GPU augmentation imports. 'gpu' on a CPU device runs the
    same batched code on the CPU (slow; for tests and comparisons)."""
    if requested not in ("auto", "cpu", "gpu"):
        raise UserError(f"--augment must be auto, cpu or gpu, got {requested!r}")
    if requested == "cpu":
        return "cpu"
    available = gpu_augment_class() is not None
    if requested == "gpu":
        if not available:
            raise UserError("--augment gpu: the GPU augmentation (fractrain.gpu_augment) is not available; "
                            "use --augment cpu")
        return "gpu"
    return "gpu" if available and device.type == "cuda" else "cpu"


def plan_workers_for(workers: int) -> int:
    """Plan-ahead workers of the device path, given the run's --workers: two
    keep ahead of any model (a plan of 256 at 512 -> 224 px takes ~7 ms of
    one core; four give no more images/s than two), and the
    rest of the CPUs are not needed."""
    return min(2, workers)


def fuse_default(requested: bool | None, device: torch.device) -> bool:
    """--fuse-augment: as asked, else on for CUDA (where the fused kernels cut
    the augmentation's memory traffic) and off on the CPU (where compiling
    costs more than it saves)."""
    return requested if requested is not None else device.type == "cuda"


AUGMENT_MODES = ("op-by-op", "static", "graph")


def check_augment_mode(mode: str, device: torch.device) -> str:
    """``mode`` if it is one of AUGMENT_MODES that ``device`` can run, else a UserError."""
    if mode not in AUGMENT_MODES:
        raise UserError(f"GPU augment mode must be one of {', '.join(AUGMENT_MODES)}, got {mode!r}")
    if mode == "graph" and device.type != "cuda":
        raise UserError("GPU augment mode 'graph' needs a CUDA device (use static or op-by-op)")
    return mode


def augment_mode_default(requested: str | None, device: torch.device) -> str:
    """--gpu-augment-mode: as asked, else graph on CUDA (the host launches one
    captured graph per batch instead of ~400 kernels; its CUDA tests give
    the op-by-op batches, tests/test_gpu_augment_static.py) and op-by-op
    on the CPU (where computing every op on every sample costs more than it
    saves, and there are no CUDA graphs)."""
    if requested is not None:
        return check_augment_mode(requested, device)
    return "graph" if device.type == "cuda" else "op-by-op"
