"""Downstream data for fine-tuning and probing: an ImageFolder tree
(``DIR/<class>/<image>``, the layout of CIFAR/ImageNet exports), WebDataset
shards (a fracbuild data set with its manifest, or plain tars whose samples
carry an image field and a ``cls`` label), or CIFAR-10/100 as torchvision
keeps them on disk (``cifar10:DIR`` / ``cifar100:DIR``: the python pickles
under ``DIR/cifar-10-batches-py`` or ``DIR/cifar-100-python``; the training
split for --train, the test split for --val), plus evaluation (top-1 / top-5
over all ranks)."""

from __future__ import annotations

import glob
import io
import os
import pickle
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fracbuild.shards import read_samples

from . import data, distributed as dist
from .errors import UserError
from .inputs.cpu import ArraySource, ImageSource
from .recipe import AugmentRecipe

IMAGE_FIELDS = ("png", "jpg", "jpeg", "webp", "ppm", "bmp")


class FolderSource:
    """Files read and decoded on access (torchvision's ImageFolder scan)."""

    def __init__(self, root: str):
        from torchvision.datasets import ImageFolder

        if not os.path.isdir(root):
            raise UserError(f"{root} is not a directory")
        try:
            folder = ImageFolder(root)
        except (FileNotFoundError, RuntimeError) as error:
            raise UserError(f"no images in {root} (expected {root}/<class>/<image>): "
                            f"{str(error).splitlines()[0][:120]}") from None
        self.classes = list(folder.classes)
        self.paths = [p for p, _ in folder.samples]
        self.labels = np.asarray([c for _, c in folder.samples], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, index: int) -> Image.Image:
        with Image.open(self.paths[index]) as img:
            return img.convert("RGB")


class EncodedSource:
    """Encoded images held in memory (plain WebDataset tars)."""

    def __init__(self, blobs: list[bytes], labels: list[int]):
        self.blobs = blobs
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classes = [str(c) for c in range(int(self.labels.max()) + 1)] if len(self.labels) else []

    def __len__(self) -> int:
        return len(self.blobs)

    def image(self, index: int) -> Image.Image:
        with Image.open(io.BytesIO(self.blobs[index])) as img:
            return img.convert("RGB")


def _read_tars(root: str) -> EncodedSource:
    """Plain WebDataset tars (no manifest), read by the builder's reader:
    each sample needs an image field and a ``cls`` label."""
    files = sorted(glob.glob(os.path.join(root, "*.tar")))
    blobs: list[bytes] = []
    labels: list[int] = []
    for path in files:
        try:
            samples = list(read_samples(path))
        except (ValueError, OSError) as error:
            raise UserError(f"shard {path} is corrupt: {error}") from None
        for key, fields in samples:
            image = next((fields[f] for f in IMAGE_FIELDS if f in fields), None)
            if image is None or "cls" not in fields:
                raise UserError(f"shard {path}: sample {key} lacks an image ({'/'.join(IMAGE_FIELDS)}) or cls field")
            blobs.append(image)
            labels.append(int(fields["cls"]))
    if not blobs:
        raise UserError(f"no images in {root} (no WebDataset samples in its .tar files)")
    return EncodedSource(blobs, labels)


# kind -> (torchvision's folder, training files, test files, label key, meta file, class-names key)
CIFAR = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels",
                "batches.meta", "label_names"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", "meta", "fine_label_names"),
}


def open_cifar(kind: str, root: str, split: str) -> ArraySource:
    """CIFAR-10/100 from torchvision's python pickles (never downloaded):
    ``root`` is the folder holding ``cifar-10-batches-py`` / ``cifar-100-python``
    (or that folder itself); split: train | test. Images uint8 (N, 32, 32, 3)."""
    folder_name, train_files, test_files, label_key, meta_name, names_key = CIFAR[kind]
    folder = root if os.path.basename(os.path.normpath(root)) == folder_name else os.path.join(root, folder_name)
    if not os.path.isdir(folder):
        raise UserError(f"{kind}:{root}: no {folder_name} folder there (torchvision's {kind.upper()} layout; "
                        "fractrain does not download it)")
    images, labels = [], []
    for name in train_files if split == "train" else test_files:
        batch = _unpickle(os.path.join(folder, name), kind)
        try:
            images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels.append(np.asarray(batch[label_key], dtype=np.int64))
        except (KeyError, ValueError) as error:
            raise UserError(f"{os.path.join(folder, name)} is not a {kind} batch ({error})") from None
    meta_path = os.path.join(folder, meta_name)
    classes = [str(c) for c in _unpickle(meta_path, kind).get(names_key, [])] if os.path.exists(meta_path) else []
    source = ArraySource(np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels))
    source.classes = classes or [str(c) for c in range(int(source.labels.max()) + 1)]  # type: ignore[attr-defined]
    return source


def _unpickle(path: str, kind: str) -> dict:
    # The CIFAR pickles are data written by the data set's authors; they are
    # read as they are distributed (latin1 keeps Python 2's byte strings).
    try:
        with open(path, "rb") as handle:
            payload = pickle.load(handle, encoding="latin1")
    except FileNotFoundError:
        raise UserError(f"{path} is missing ({kind} in torchvision's layout)") from None
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as error:
        raise UserError(f"{path} is not a {kind} batch: {error}") from None
    if not isinstance(payload, dict):
        raise UserError(f"{path} is not a {kind} batch")
    return payload


def open_source(location: str, split: str = "train") -> ImageSource:
    """An ImageFolder tree, a fracbuild data set (manifest.json), a folder of
    tars, or ``cifar10:DIR`` / ``cifar100:DIR`` (split: which CIFAR split)."""
    kind, sep, root = location.partition(":")
    if sep and kind in CIFAR:
        return open_cifar(kind, root, split)
    if "://" in location or os.path.exists(os.path.join(location, "manifest.json")):
        dataset = data.load(location)
        source = ArraySource(dataset.images, dataset.labels)
        source.classes = [str(c) for c in range(dataset.num_classes)]  # type: ignore[attr-defined]
        return source
    if not os.path.isdir(location):
        raise UserError(f"{location} is not a directory")
    if glob.glob(os.path.join(location, "*.tar")):
        return _read_tars(location)
    return FolderSource(location)


@dataclass
class Downstream:
    train: ImageSource
    val: ImageSource
    num_classes: int


def open_pair(train: str | None, val: str | None) -> Downstream:
    if not train or not val:
        raise UserError("--train and --val are both required (ImageFolder trees or WebDataset shards)")
    train_source, val_source = open_source(train, "train"), open_source(val, "test")
    train_classes, val_classes = train_source.classes, val_source.classes  # type: ignore[attr-defined]
    if isinstance(train_source, FolderSource) and isinstance(val_source, FolderSource):
        if train_classes != val_classes:
            extra = sorted(set(val_classes) ^ set(train_classes))
            raise UserError(f"--val classes differ from --train classes (e.g. {', '.join(extra[:3]) or 'order'})")
    num_classes = max(len(train_classes), len(val_classes))
    if num_classes < 2:
        raise UserError(f"{train} has {num_classes} class; at least 2 are needed")
    return Downstream(train_source, val_source, num_classes)


def eval_transform(recipe: AugmentRecipe, crop_pct: float):
    from timm.data import create_transform

    return create_transform(input_size=recipe.input_size, is_training=False, interpolation=recipe.interpolation,
                            mean=tuple(recipe.mean), std=tuple(recipe.std), crop_pct=crop_pct)


class _EvalSet(Dataset):
    def __init__(self, source: ImageSource, indices: np.ndarray, transform):
        self.source, self.indices, self.transform = source, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        index = int(self.indices[i])
        return self.transform(self.source.image(index)), int(self.source.labels[index])


def make_evaluator(source: ImageSource, recipe: AugmentRecipe, crop_pct: float, batch: int, workers: int,
                   ctx: dist.Context) -> Callable[[nn.Module, Callable], dict[str, float]]:
    """evaluate(model, autocast) -> {"top1", "top5"} over the whole set; each
    rank takes every world_size-th image and the counts are summed."""
    indices = np.arange(ctx.rank, len(source), ctx.world_size)
    loader = DataLoader(_EvalSet(source, indices, eval_transform(recipe, crop_pct)), batch_size=batch,
                        shuffle=False, num_workers=workers, persistent_workers=workers > 0,
                        pin_memory=ctx.device.type == "cuda")

    @torch.no_grad()
    def evaluate(model: nn.Module, autocast: Callable) -> dict[str, float]:
        model.eval()
        counts = torch.zeros(3, dtype=torch.float64, device=ctx.device)  # top1, top5, seen
        for x, y in loader:
            x, y = x.to(ctx.device, non_blocking=True), y.to(ctx.device, non_blocking=True)
            with autocast():
                logits = model(x)
            top = logits.float().topk(min(5, logits.shape[1]), dim=1).indices
            hit = top == y[:, None]
            counts[0] += hit[:, 0].sum()
            counts[1] += hit.any(dim=1).sum()
            counts[2] += y.numel()
        dist.all_reduce_sum(ctx, counts)
        seen = max(counts[2].item(), 1.0)
        return {"top1": counts[0].item() / seen, "top5": counts[1].item() / seen}

    return evaluate
