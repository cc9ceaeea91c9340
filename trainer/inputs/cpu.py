"""The CPU input path: timm's ``create_transform`` + ``Mixup`` in DataLoader
worker processes, one whole batch per work item.

The DataLoader's sampler yields step numbers; the dataset turns step ``s``
into this rank's batch: the indices from the exact-epoch schedule, each
image transformed with timm's training transform, then Mixup/CutMix (or
label smoothing) over the batch. Workers therefore split the rank's batches
between them, and their union is exactly the rank's slice of the schedule.

timm's transforms draw from Python's ``random``, NumPy's global generator
and torch's; every batch reseeds all three from ``(seed, rank, step)`` (and
restores them afterwards), so a batch is a pure function of its step: the
same with 0 or 8 workers, and the same after a resume.
"""

from __future__ import annotations

import contextlib
import itertools
import random
from typing import Iterator, Protocol

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from .. import timm_compat  # noqa: F401  (Pillow 13 posterize fix, before any transform is built)
from ..interrupts import ignore_in_worker
from ..recipe import AugmentRecipe
from ..schedule import EpochSchedule, mix_seed


class ImageSource(Protocol):
    """Random access to a training set: ``len``, ``image(i)`` (PIL, RGB) and
    ``labels`` (int64 NumPy array)."""

    labels: np.ndarray

    def __len__(self) -> int: ...

    def image(self, index: int) -> Image.Image: ...


class ArraySource:
    """Images held in one uint8 tensor (N, H, W) or (N, H, W, 3), e.g. the
    decoded shards. Grayscale is expanded to RGB (the paper's recipe)."""

    def __init__(self, images: np.ndarray | Tensor, labels: np.ndarray):
        self.images = torch.from_numpy(images) if isinstance(images, np.ndarray) else images
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def image(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index].numpy()).convert("RGB")


def train_transform(recipe: AugmentRecipe):
    """timm's training transform for ``recipe`` (RandomResizedCrop, flips,
    RandAugment, colour jitter, ToTensor, Normalize, RandomErasing). With
    ``crop`` off, RandomResizedCrop with scale = ratio = 1 takes the whole
    (square) image and only resizes it."""
    from timm.data import create_transform

    scale, ratio = (recipe.scale, recipe.ratio) if recipe.crop else ((1.0, 1.0), (1.0, 1.0))
    return create_transform(
        input_size=recipe.input_size, is_training=True, scale=tuple(scale), ratio=tuple(ratio),
        hflip=recipe.hflip, vflip=recipe.vflip, color_jitter=recipe.color_jitter or None,
        auto_augment=recipe.auto_augment, interpolation=recipe.interpolation,
        mean=tuple(recipe.mean), std=tuple(recipe.std),
        re_prob=recipe.reprob, re_mode=recipe.remode, re_count=recipe.recount)


class BatchTargets:
    """Hard labels -> soft targets: timm ``Mixup`` when the recipe mixes,
    otherwise label smoothing (identical to timm's LabelSmoothingCrossEntropy
    once fed to SoftTargetCrossEntropy)."""

    def __init__(self, recipe: AugmentRecipe, num_classes: int):
        from timm.data import Mixup

        self.recipe = recipe
        self.num_classes = num_classes
        self.mixup = (Mixup(mixup_alpha=recipe.mixup_alpha, cutmix_alpha=recipe.cutmix_alpha, prob=recipe.mix_prob,
                            switch_prob=recipe.switch_prob, mode="batch", label_smoothing=recipe.label_smoothing,
                            num_classes=num_classes)
                      if recipe.mixes else None)

    def __call__(self, x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        from timm.data.mixup import mixup_target

        if self.mixup is not None:
            return self.mixup(x, labels)
        return x, mixup_target(labels, self.num_classes, 1.0, self.recipe.label_smoothing)


@contextlib.contextmanager
def seeded(seed: int):
    """Seed ``random``, NumPy's and torch's global generators; restore them after."""
    saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(mix_seed(seed, 1) % (1 << 32))
    torch.default_generator.manual_seed(mix_seed(seed, 2))  # CPU only: leave CUDA draws alone
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])


class StepBatches(Dataset):
    """Map-style dataset whose key is a step: ``dataset[s]`` is this rank's
    augmented batch at step ``s``: (float32 (b, 3, S, S), float32 (b, C))."""

    def __init__(self, source: ImageSource, schedule: EpochSchedule, recipe: AugmentRecipe, num_classes: int,
                 seed: int):
        self.source = source
        self.schedule = schedule
        self.transform = train_transform(recipe)
        self.targets = BatchTargets(recipe, num_classes)
        self.seed = seed

    def __getitem__(self, step: int) -> tuple[Tensor, Tensor]:
        indices = self.schedule.indices(step)
        with seeded(mix_seed(self.seed, 0xA06, self.schedule.rank, step)):
            x = torch.stack([self.transform(self.source.image(int(i))) for i in indices])
            labels = torch.from_numpy(self.source.labels[indices])
            return self.targets(x, labels)


class _Steps(Sampler):
    def __init__(self, start: int, stop: int | None):
        self.start, self.stop = start, stop

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop)) if self.stop is not None else itertools.count(self.start)


class CpuPipeline:
    """Batches from DataLoader workers, moved to ``device``."""

    name = "cpu"

    def __init__(self, source: ImageSource, schedule: EpochSchedule, recipe: AugmentRecipe, num_classes: int,
                 device: torch.device, seed: int, workers: int):
        self.dataset = StepBatches(source, schedule, recipe, num_classes, seed)
        self.device = device
        self.workers = workers
        self.seed = seed

    def batches(self, start_step: int, stop_step: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        loader = DataLoader(
            self.dataset, batch_size=None, sampler=_Steps(start_step, stop_step), num_workers=self.workers,
            pin_memory=self.device.type == "cuda", prefetch_factor=4 if self.workers else None,
            # A private generator: creating the iterator must not consume the
            # global RNG (that would change drop-path draws and break resume).
            generator=torch.Generator().manual_seed(mix_seed(self.seed, start_step)),
            worker_init_fn=ignore_in_worker if self.workers else None)
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
