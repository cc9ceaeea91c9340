"""The pre-training input: one factory that decides the input path and its
defaults once (``choose_input``) and builds the pipeline for it
(``create_pipeline``): the CPU path (timm transforms in DataLoader workers),
the device path (GpuAugment on cached uint8 images) or either of them over
streamed shards. The decided values go into the run's saved configuration
(``InputChoice.recorded``), so a run folder says what ran."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..config import RunConfig
from .cpu import ArraySource, CpuPipeline
from ..recipe import AugmentRecipe
from .defaults import augment_mode_default, choose, fuse_default, plan_workers_for
from .device import DevicePipeline
from .protocol import InputPipeline
from .streaming import build_pipeline


@dataclass(frozen=True)
class InputChoice:
    """The input path and its settings as decided for one run."""

    path: str  # "cpu" or "gpu" (the batched augmentation, on whatever device)
    workers: int  # DataLoader workers per rank
    plan_workers: int  # the device path's plan-ahead workers
    fuse_augment: bool
    gpu_augment_mode: str

    def recorded(self, run: RunConfig) -> RunConfig:
        """``run`` with the decided values in place of the defaults asked for."""
        return dataclasses.replace(run, workers=self.workers, fuse_augment=self.fuse_augment,
                                   gpu_augment_mode=self.gpu_augment_mode)


def choose_input(run: RunConfig, device: torch.device, workers: int, augment_cls: Any | None = None) -> InputChoice:
    """Decide the input path for ``run``'s settings on ``device``, with
    ``workers`` DataLoader workers per rank; an explicit ``augment_cls``
    (tests) takes the device path unless the CPU path is asked for."""
    path = "gpu" if augment_cls is not None and run.input_path != "cpu" else choose(run.input_path, device)
    # The CPU path has no augment mode to check: it records the mode asked for, or the device's default.
    mode = (augment_mode_default(run.gpu_augment_mode, device) if path == "gpu"
            else run.gpu_augment_mode or augment_mode_default(None, device))
    return InputChoice(path=path, workers=workers, plan_workers=plan_workers_for(workers),
                       fuse_augment=fuse_default(run.fuse_augment, device), gpu_augment_mode=mode)


def create_pipeline(choice: InputChoice, dataset: Any, schedule: Any, device: torch.device, recipe: AugmentRecipe,
                    num_classes: int, seed: int, *, stream: tuple[Any, dict[str, Any]] | None = None,
                    augment_cls: Any | None = None, log: Callable[[str], None] = lambda m: None) -> InputPipeline:
    """The pipeline ``choice`` names, over ``dataset`` (data.Dataset: decoded
    images and labels) or, with ``stream`` = (location, manifest), over the
    shards read as the StreamSchedule ``schedule`` goes."""
    if stream is not None:
        location, manifest = stream
        return build_pipeline(choice.path, location, manifest, schedule, recipe, num_classes, device, seed,
                              choice.workers, augment_cls=augment_cls,
                              augment_options={"fuse": choice.fuse_augment},
                              augment_mode=choice.gpu_augment_mode, log=log)
    if choice.path == "gpu":
        return DevicePipeline(dataset.images, dataset.labels, schedule, recipe, num_classes, device, seed,
                              augment_cls=augment_cls, log=log, plan_workers=choice.plan_workers,
                              augment_options={"fuse": choice.fuse_augment}, augment_mode=choice.gpu_augment_mode)
    return CpuPipeline(ArraySource(dataset.images, dataset.labels), schedule, recipe, num_classes, device, seed,
                       choice.workers)
