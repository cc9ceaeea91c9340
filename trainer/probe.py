"""Linear probing (the paper's Fig. 3): the pre-trained backbone cut after K
transformer blocks, frozen, and a linear classifier trained on its pooled
features (after the backbone's final norm, through a BatchNorm without
affine parameters, as in MAE's linear probe, so that features of any scale
train with one learning rate)."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from . import model as models
from .config import TrainConfig
from .downstream_run import run_downstream


class LinearProbe(nn.Module):
    """Frozen ``backbone`` (cut, classifier removed) + trainable ``head``."""

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        backbone.reset_classifier(0)
        for parameter in backbone.parameters():
            parameter.requires_grad_(False)
        self.backbone = backbone
        dim = backbone.num_features
        self.head = nn.Sequential(nn.BatchNorm1d(dim, affine=False, eps=1e-6), nn.Linear(dim, num_classes))
        nn.init.trunc_normal_(self.head[1].weight, std=0.01)
        nn.init.zeros_(self.head[1].bias)

    def train(self, mode: bool = True) -> "LinearProbe":
        super().train(mode)
        self.backbone.eval()  # frozen: no drop path, no dropout, ever
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self.backbone(x)
        return self.head(features.float())


def build_probe_model(cfg: TrainConfig, num_classes: int, init: dict[str, Any] | None) -> nn.Module:
    backbone = models.create(cfg.model.name, num_classes, cfg.augment.input_size, 0.0, cfg.model.kwargs)
    if init is not None and not cfg.model.scratch:
        models.load_backbone(backbone, init["model"], cfg.model.init)
    models.cut_blocks(backbone, cfg.model.blocks if cfg.model.blocks is not None else len(models.blocks_of(backbone)))
    return LinearProbe(backbone, num_classes)


def run(cfg: TrainConfig, *, resume: str | None = None, on_step: Callable[[int], None] | None = None
        ) -> dict[str, Any]:
    """Probe as ``cfg`` says; returns the run's summary (best_top1, ...)."""
    summary = run_downstream(cfg, build_probe_model, resume=resume, on_step=on_step)
    return {**summary, "blocks": cfg.model.blocks}
