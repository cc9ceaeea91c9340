"""Pre-training on a fracbuild data set: every check first, then the data,
the model, the input path, and the shared loop."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch

from . import data, distributed as dist, inputs, model as models, threads
from .inputs import streaming
from .config import TrainConfig
from .errors import UserError
from .loop import check_resume
from .run import (check_batch, check_memory, fit_job, in_process_group, load_resumed, log_run_folder, start_in,
                  stderr_log)
from .runfolder import default_out
from .schedule import make_schedule


def run(cfg: TrainConfig, *, resume: str | None = None, on_step: Callable[[int], None] | None = None,
        augment_cls: Any | None = None) -> dict[str, Any]:
    """Pre-train as ``cfg`` says; returns the run's summary.

    resume: None (the run folder must be new), "auto" or a checkpoint path.
    on_step: called after every step (tests use it to simulate a kill).
    augment_cls: a stand-in for GpuAugment (tests).
    """
    return in_process_group(cfg, lambda ctx: _run(cfg, ctx, resume, on_step, augment_cls))


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
    start, finished = start_in(out, resume, log)
    if finished is not None:
        return finished
    payload = load_resumed(start)
    if payload is not None:
        check_resume(payload, start.checkpoint, cfg, cfg.model.name, num_classes, manifest_sha)
        streaming.check_resume(payload, start.checkpoint, input_mode, schedule, ctx.world_size)
    log_run_folder(ctx, log, out, start)
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

    return fit_job(out, ctx, config=cfg, model=net, pipeline=pipe, schedule=schedule, total_steps=total_steps,
                   num_classes=num_classes, model_name=cfg.model.name, resume=payload, resume_path=start.checkpoint,
                   manifest_sha256=manifest_sha, log=log, on_step=on_step,
                   extra={"shards": cfg.data.shards, "num_samples": n})

