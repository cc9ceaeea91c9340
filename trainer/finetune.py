"""Fine-tuning: start from a pre-trained checkpoint without its head, or
from random initialisation with ``--scratch`` (same recipe: "Scratch vs
1p-frac"), train on the downstream set and evaluate top-1/top-5 every epoch
(the job itself: downstream_run.py, shared with the linear probe)."""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from . import model as models
from .config import TrainConfig
from .downstream_run import run_downstream


def build_finetune_model(cfg: TrainConfig, num_classes: int, init: dict[str, Any] | None) -> nn.Module:
    """The whole model with a new head for ``num_classes``; every other weight from ``init`` unless --scratch."""
    net = models.create(cfg.model.name, num_classes, cfg.augment.input_size, cfg.model.drop_path, cfg.model.kwargs)
    if init is not None and not cfg.model.scratch:
        models.load_backbone(net, init["model"], cfg.model.init)
    return net


def run(cfg: TrainConfig, *, resume: str | None = None, on_step: Callable[[int], None] | None = None
        ) -> dict[str, Any]:
    """Fine-tune as ``cfg`` says; returns the run's summary (best_top1, ...)."""
    return run_downstream(cfg, build_finetune_model, resume=resume, on_step=on_step)
