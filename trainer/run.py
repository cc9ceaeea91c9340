"""Start-up shared by the training commands: the batch and memory checks,
the process group around a run (bench: its single-process context), where
the run folder starts (fresh, resumed, or finished already) and handing the
job to the loop inside that folder. pretrain, finetune, probe and bench
stand side by side over this module and import nothing from each other."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable, TypeVar

import torch

from . import checkpoint as ckpt
from . import distributed as dist, resources
from .config import TrainConfig
from .errors import UserError
from .loop import Job, fit_in_folder, resolve_precision
from .runfolder import SUMMARY, RunFolder, Start, decide

Result = TypeVar("Result")


def check_batch(global_batch: int, world_size: int, mixes: bool) -> int:
    """The per-rank batch; UserError when the global batch does not split."""
    if global_batch < 1:
        raise UserError(f"--batch-size must be >= 1, got {global_batch}")
    if global_batch % world_size:
        raise UserError(f"--batch-size {global_batch} is not divisible by the world size {world_size} "
                        "(the global batch is split equally over the ranks)")
    local = global_batch // world_size
    if mixes and local % 2:
        raise UserError(f"the batch per rank ({local}) must be even with Mixup/CutMix "
                        f"(--batch-size {global_batch} over {world_size} rank(s))")
    return local


def in_process_group(cfg: TrainConfig, body: Callable[[dist.Context], Result]) -> Result:
    """``body(ctx)`` on this rank's device inside the process group, which is
    torn down however ``body`` ends (unless it was joined before: see
    distributed.shared_group)."""
    # Before joining the process group: a bad split fails on every rank at once.
    check_batch(cfg.batch_size, dist.world_size_from_env(), cfg.recipe().mixes)
    joins = not torch.distributed.is_initialized()  # else an experiment holds the group for all its runs
    ctx = dist.setup(cfg.run.device)
    try:
        return body(ctx)
    finally:
        if joins:
            dist.teardown()


def single_process(requested_device: str) -> dist.Context:
    """The context of a run in this process alone (no process group), on
    the device ``requested_device`` resolves to (the current CUDA device)."""
    kind = dist.resolve_device(requested_device)
    device = torch.device("cuda", torch.cuda.current_device()) if kind == "cuda" else torch.device("cpu")
    return dist.Context(rank=0, world_size=1, local_rank=0, local_world_size=1, device=device)


def stderr_log(ctx: dist.Context) -> Callable[[str], None]:
    """A logger that writes a line to stderr on the main rank and drops it on the others."""
    return (lambda message: print(message, file=sys.stderr, flush=True)) if ctx.is_main else (lambda message: None)


def check_memory(cfg: TrainConfig, ctx: dist.Context, net: torch.nn.Module, path: str, workers: int,
                 dataset_bytes: int = 0) -> None:
    """UserError (one line saying what fits) when a step at this batch would
    not fit the memory available; before anything big is allocated.
    dataset_bytes: the decoded images the run keeps in host memory (uint8)."""
    precision = resolve_precision(cfg.run.precision, ctx.device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    host = resources.available_memory(torch.device("cpu"), ctx.local_world_size)
    # Read before the measurement, whose blocks CUDA's caching allocator keeps.
    available = resources.available_memory(ctx.device, ctx.local_world_size)
    need = resources.estimate(
        net, input_size=cfg.recipe().input_size, device=ctx.device, path=path, workers=workers,
        local_batch=cfg.batch_size // ctx.world_size, dataset_bytes=dataset_bytes // max(1, ctx.local_world_size),
        dataset_in_ram=dataset_bytes <= host // 2,
        autocast=lambda: torch.autocast(ctx.device.type, dtype=dtype, enabled=dtype is not None))
    resources.check_fits(need, available, global_batch=cfg.batch_size, world_size=ctx.world_size,
                         even=cfg.recipe().mixes, device=ctx.device)


def finished_summary(out: str) -> dict[str, Any]:
    """The summary.json of the finished run in ``out``."""
    with open(os.path.join(out, SUMMARY), encoding="utf-8") as handle:
        return json.load(handle)


def start_in(out: str, resume: str | None, log: Callable[[str], None]) -> tuple[Start, dict[str, Any] | None]:
    """Where the run in ``out`` starts (read-only: see :func:`runfolder.decide`)
    and, when it is finished already, its summary: then there is nothing to
    do (logged) and the caller returns that summary."""
    start = decide(out, resume)
    if start.finished:
        log(f"{out} is finished; nothing to do")
        return start, finished_summary(out)
    return start, None


def load_resumed(start: Start) -> dict[str, Any] | None:
    """The checkpoint the run continues from, loaded; None for a fresh start."""
    return ckpt.load(start.checkpoint) if start.checkpoint else None


def log_run_folder(ctx: dist.Context, log: Callable[[str], None], out: str, start: Start) -> None:
    if ctx.is_main:
        log(f"run folder: {out}" + (f" (resuming from {os.path.basename(start.checkpoint)})" if start.checkpoint else ""))


def fit_job(out: str, ctx: dist.Context, **job: Any) -> dict[str, Any]:
    """Open the run folder ``out`` and train the :class:`Job` made of
    ``job``'s fields in it; returns the run's summary. A folder this run
    created is removed again if the run fails before it holds anything."""
    existed = os.path.isdir(out)
    folder = RunFolder(out, ctx.is_main)
    return fit_in_folder(Job(ctx=ctx, folder=folder, **job), out, existed)
