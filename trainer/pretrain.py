"""Pre-training on a fracbuild data set: every check first, then the data,
the model, the input path, and the shared loop."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any, Callable

import torch

from . import checkpoint as ckpt
from . import data, distributed as dist, inputs, model as models, resources, threads
from .inputs import streaming
from .config import TrainConfig
from .errors import UserError
from .loop import Job, check_resume, fit_in_folder, resolve_precision
from .runfolder import SUMMARY, RunFolder, decide, default_out
from .schedule import make_schedule


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


def stderr_log(ctx: dist.Context) -> Callable[[str], None]:
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
    with open(os.path.join(out, SUMMARY), encoding="utf-8") as handle:
        return json.load(handle)


def run(cfg: TrainConfig, *, resume: str | None = None, on_step: Callable[[int], None] | None = None,
        augment_cls: Any | None = None) -> dict[str, Any]:
    """Pre-train as ``cfg`` says; returns the run's summary.

    resume: None (the run folder must be new), "auto" or a checkpoint path.
    on_step: called after every step (tests use it to simulate a kill).
    augment_cls: a stand-in for GpuAugment (tests).
    """
    # Before joining the process group: a bad split fails on every rank at once.
    check_batch(cfg.batch_size, dist.world_size_from_env(), cfg.recipe().mixes)
    ctx = dist.setup(cfg.run.device)
    try:
        return _run(cfg, ctx, resume, on_step, augment_cls)
    finally:
        dist.teardown()


def _run(cfg: TrainConfig, ctx: dist.Context, resume, on_step, augment_cls) -> dict[str, Any]:
    log = stderr_log(ctx)
    recipe = cfg.recipe()
    check_batch(cfg.batch_size, ctx.world_size, recipe.mixes)
    location, manifest, manifest_sha = data.read_manifest(cfg.data.shards)
    num_classes, n = manifest["num_classes"], manifest["num_samples"]
    budget = streaming.memory_budget(cfg.data.memory_budget)
    input_mode = streaming.choose_input(cfg.data.input, budget, location, manifest, log)
    if input_mode == "stream":
        if cfg.budget.epoch_mode != "exact":
            log(f"streamed from its shards, the set trains in exact epochs (--epoch-mode {cfg.budget.epoch_mode} "
                f"applies to sets held in memory)")
        schedule = streaming.StreamSchedule.from_manifest(manifest, cfg.batch_size, cfg.run.seed, ctx.world_size,
                                                          ctx.rank, cfg.data.shuffle_buffer)
    else:
        schedule = make_schedule(cfg, n, ctx.world_size, ctx.rank)
    total_steps = cfg.total_steps(schedule)
    out = cfg.run.out or default_out("pretrain", cfg.model.name, cfg.data.shards, cfg.run.seed)
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, out=out))
    start = decide(out, resume)
    if start.finished:
        log(f"{out} is finished; nothing to do")
        return finished_summary(out)
    payload = ckpt.load(start.checkpoint) if start.checkpoint else None
    if payload is not None:
        check_resume(payload, start.checkpoint, cfg, cfg.model.name, num_classes, manifest_sha)
        streaming.check_resume(payload, start.checkpoint, input_mode, schedule, ctx.world_size)
    if ctx.is_main:
        log(f"run folder: {out}" + (f" (resuming from {os.path.basename(start.checkpoint)})" if start.checkpoint else ""))
    choice = inputs.choose_input(cfg.run, ctx.device, threads.for_run(ctx, cfg.run, log), augment_cls)
    path, workers = choice.path, choice.workers
    cfg = dataclasses.replace(cfg, run=choice.recorded(cfg.run))  # config.yaml says what ran

    torch.manual_seed(cfg.run.seed)  # the same initial weights on every rank
    net = models.create(cfg.model.name, num_classes, recipe.input_size, cfg.model.drop_path, cfg.model.kwargs)
    net.to(ctx.device)
    channels = data.probe_channels(location, manifest["shards"][0])  # 1 (grayscale) or 3 (RGB)
    # Streamed, the host holds a shuffle window per rank instead of the whole set.
    held = cfg.data.shuffle_buffer * ctx.local_world_size if input_mode == "stream" else n
    check_memory(cfg, ctx, net, path, workers, min(n, held) * manifest["image_size"] ** 2 * channels)

    dataset = None if input_mode == "stream" else data.load(
        cfg.data.shards, log=log, group=dist.node_group(ctx), memory_limit=budget,
        progress=cfg.run.progress and ctx.is_main)
    if dataset is not None and dataset.manifest_sha256 != manifest_sha:
        raise UserError(f"{cfg.data.shards}: the manifest changed while the run started")
    pipe = inputs.create_pipeline(choice, dataset, schedule, ctx.device, recipe, num_classes, cfg.run.seed,
                                  stream=(location, manifest) if input_mode == "stream" else None,
                                  augment_cls=augment_cls, log=log)
    if ctx.is_main and path == "gpu" and input_mode != "stream":
        planners, mode = choice.plan_workers, choice.gpu_augment_mode
        log(f"GPU augmentation ({mode}): batches planned "
            f"{f'ahead by {planners} workers' if planners else 'inline'}"
            f"{'; fused kernels, compiled during the first steps' if choice.fuse_augment else ''}")
    # The pipeline holds what it needs: on the GPU path the decoded images now
    # live in GPU (or pinned) memory, and dropping this reference frees the
    # host copy (5.5 GB per rank at L = 21,000, 512 px).
    del dataset
    if ctx.is_main and schedule.mode == "exact" and total_steps * cfg.batch_size != cfg.total_samples(n):
        log(f"budget of {cfg.total_samples(n)} samples rounded up to {total_steps} whole global batches "
            f"({total_steps * cfg.batch_size} samples)")

    existed = os.path.isdir(out)
    folder = RunFolder(out, ctx.is_main)
    job = Job(config=cfg, ctx=ctx, model=net, pipeline=pipe, schedule=schedule, total_steps=total_steps,
              num_classes=num_classes, model_name=cfg.model.name, folder=folder, resume=payload,
              resume_path=start.checkpoint, manifest_sha256=manifest_sha, log=log, on_step=on_step,
              extra={"shards": cfg.data.shards, "num_samples": n})
    return fit_in_folder(job, out, existed)

