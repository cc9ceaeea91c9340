"""The downstream training job that fine-tuning and the linear probe share:
the architecture from ``--init``'s checkpoint, the downstream set on the CPU
input path, top-1/top-5 on the validation set every epoch. Each command
supplies only how its model is built from the checkpoint."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
from torch import nn

from . import checkpoint as ckpt
from . import distributed as dist, downstream, model as models, threads
from .config import TrainConfig
from .errors import UserError
from .inputs.cpu import CpuPipeline
from .loop import check_resume
from .run import (check_batch, check_memory, fit_job, in_process_group, load_resumed, log_run_folder, start_in,
                  stderr_log)
from .runfolder import default_out
from .schedule import make_schedule

# (config, number of classes, the --init checkpoint or None) -> the model to train, on the CPU
BuildModel = Callable[[TrainConfig, int, "dict[str, Any] | None"], nn.Module]


def resolve_architecture(cfg: TrainConfig) -> tuple[TrainConfig, dict[str, Any] | None]:
    """Fill in the model from ``--init``'s checkpoint; returns (config, init payload).

    With --init the architecture (name and create_model arguments) is the
    checkpoint's; a different --model is an error. --scratch without --init
    needs --model.
    """
    m = cfg.model
    if not m.init:
        if not m.scratch:
            raise UserError(f"{cfg.command} needs --init CKPT (a fractrain checkpoint) or --scratch with --model")
        if not m.name:
            raise UserError("--scratch without --init needs --model")
        return cfg, None
    payload = ckpt.load(m.init)
    recorded = (payload.get("config") or {}).get("model") or {}
    name = payload.get("model_name")
    if m.name and models.resolve_name(m.name) != name:
        raise UserError(f"checkpoint {m.init} is for model {name}, not {models.resolve_name(m.name)}")
    kwargs = {**(recorded.get("kwargs") or {}), **m.kwargs}
    return dataclasses.replace(cfg, model=dataclasses.replace(m, name=name, kwargs=kwargs)), payload


def run_downstream(cfg: TrainConfig, build: BuildModel, *, resume: str | None = None,
                   on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train ``build``'s model on the downstream set as ``cfg`` says; returns the run's summary."""
    return in_process_group(cfg, lambda ctx: _run(cfg, ctx, build, resume, on_step))


def _run(cfg: TrainConfig, ctx: dist.Context, build: BuildModel, resume, on_step) -> dict[str, Any]:
    log = stderr_log(ctx)
    cfg, init = resolve_architecture(cfg)
    recipe = cfg.recipe()
    check_batch(cfg.batch_size, ctx.world_size, recipe.mixes)
    extra = ("scratch" if cfg.model.scratch else "") + (f"k{cfg.model.blocks}" if cfg.command == "probe" else "")
    out = cfg.run.out or default_out(cfg.command, cfg.model.name, cfg.data.train, cfg.run.seed, extra)
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, out=out))
    start, finished = start_in(out, resume, log)
    if finished is not None:
        return finished
    data = downstream.open_pair(cfg.data.train, cfg.data.val)
    payload = load_resumed(start)
    if payload is not None:
        check_resume(payload, start.checkpoint, cfg, cfg.model.name, data.num_classes, None)
    log_run_folder(ctx, log, out, start)
    workers = threads.for_run(ctx, cfg.run, log)

    torch.manual_seed(cfg.run.seed)
    net = build(cfg, data.num_classes, init).to(ctx.device)
    check_memory(cfg, ctx, net, "cpu", workers)
    schedule = make_schedule(cfg, len(data.train), ctx.world_size, ctx.rank)
    total_steps = cfg.total_steps(schedule)
    pipe = CpuPipeline(data.train, schedule, recipe, data.num_classes, ctx.device, cfg.run.seed, workers)
    evaluate = downstream.make_evaluator(data.val, recipe, cfg.data.crop_pct, schedule.local_batch, workers, ctx)
    log(f"{cfg.command}: {len(data.train)} training and {len(data.val)} validation images, {data.num_classes} classes; "
        + ("random initialisation (--scratch)" if cfg.model.scratch or init is None else f"initialised from {cfg.model.init}"))

    return fit_job(out, ctx, config=cfg, model=net, pipeline=pipe, schedule=schedule, total_steps=total_steps,
                   num_classes=data.num_classes, model_name=cfg.model.name, resume=payload,
                   resume_path=start.checkpoint, evaluate=evaluate, log=log, on_step=on_step,
                   extra={"train": cfg.data.train, "val": cfg.data.val,
                          "init": None if cfg.model.scratch else cfg.model.init,
                          "scratch": cfg.model.scratch or init is None})
