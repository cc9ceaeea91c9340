"""Optimizer and learning-rate schedule from timm's factories.

With ``lr_update: step`` the schedule's unit is the optimizer step: warm-up
and cosine lengths are converted from epochs with the run's steps per epoch,
so a run of E epochs and one of E x N samples have the same curve. With
``lr_update: epoch`` (the released code, which steps timm's scheduler once
per epoch) the unit is the epoch: every step of epoch ``e`` (0-based) trains
at the schedule's value for ``e``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2

from .config import LR_UPDATES, OptimConfig
from .errors import UserError


# The timm optimizer names that build torch.optim.Adam / AdamW, which take ``fused``.
_FUSABLE = ("adam", "adamw")


def fused_option(opt: str, params: list) -> dict:
    """{"fused": True} for torch's Adam/AdamW when every parameter is on CUDA,
    else {}. The fused update is one kernel for all parameters where the
    default (foreach) launches several per step from Python, which costs
    host time a fast compiled model's step cannot hide (profile in
    benchmarks/RESULTS.md)."""
    if opt.lower() in _FUSABLE and params and all(p.is_cuda for p in params):
        return {"fused": True}
    return {}


def create_optimizer(model: torch.nn.Module, cfg: OptimConfig, global_batch: int) -> torch.optim.Optimizer:
    """timm optimizer at the linearly scaled lr; no weight decay on biases,
    norms and the tokens the model lists in ``no_weight_decay``; Adam/AdamW
    fused on CUDA (fused_option)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise UserError("the model has no trainable parameters")
    kwargs = {"momentum": cfg.momentum} if cfg.opt.lower() in ("sgd", "momentum", "nesterov", "lars", "lamb") else {}
    kwargs.update(fused_option(cfg.opt, params))
    try:
        return create_optimizer_v2(model, opt=cfg.opt, lr=cfg.scaled_lr(global_batch),
                                   weight_decay=cfg.weight_decay, **kwargs)
    except (ValueError, AssertionError, KeyError) as error:
        raise UserError(f"--opt {cfg.opt}: {error}") from None


def create_schedule(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int,
                    steps_per_epoch: float, global_batch: int | None = None):
    """A timm scheduler whose ``step_update(lr_position(...))`` gives the lr of
    a step. global_batch: scales the warm-up start and floor when the config
    asks (None: as given)."""
    if cfg.lr_update not in LR_UPDATES:
        raise UserError(f"--lr-update must be step or epoch, got {cfg.lr_update!r}")
    if cfg.lr_update == "epoch":
        length = max(1, math.ceil(total_steps / steps_per_epoch - 1e-9))
        warmup = int(round(cfg.warmup_epochs))
    else:
        length, warmup = max(1, total_steps), int(round(cfg.warmup_epochs * steps_per_epoch))
    warmup_lr = cfg.scaled_warmup_lr(global_batch) if global_batch else cfg.warmup_lr
    min_lr = cfg.scaled_min_lr(global_batch) if global_batch else cfg.min_lr
    try:
        scheduler, _ = create_scheduler_v2(
            optimizer, sched=cfg.sched, num_epochs=length, warmup_epochs=warmup,
            warmup_lr=warmup_lr, min_lr=min_lr, step_on_epochs=False, updates_per_epoch=1)
    except (ValueError, AssertionError) as error:
        raise UserError(f"--sched {cfg.sched}: {error}") from None
    if scheduler is None:
        raise UserError(f"--sched {cfg.sched}: unknown schedule")
    return scheduler


def lr_position(cfg: OptimConfig, schedule: Any, step: int) -> int:
    """Where ``step`` (0-based, before it runs) sits on the lr schedule: the
    step itself, or the epoch it belongs to (schedule: an EpochSchedule)."""
    return schedule.epochs_done(step) if cfg.lr_update == "epoch" else step


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def describe(cfg: OptimConfig, global_batch: int) -> str:
    scaled = cfg.scaled_lr(global_batch)
    rule = (f" (= {cfg.lr:g} x {global_batch} / {cfg.lr_base_batch})" if cfg.lr_base_batch else "")
    return (f"{cfg.opt} lr {scaled:.3g}{rule}, weight decay {cfg.weight_decay:g}, {cfg.sched} from "
            f"{cfg.scaled_warmup_lr(global_batch):.3g} to {cfg.scaled_min_lr(global_batch):.3g}, "
            f"lr updated every {cfg.lr_update}")

