"""The resolved configuration of a run: frozen dataclasses, one per concern.

Precedence: the dataclasses' defaults (the ``exact-epochs`` recipes, below)
< a named recipe (``--recipe``: ``recipes/NAME.yaml``; the command line's
default is ``paper`` for pre-training and ``paper-finetune`` for
fine-tuning) < a YAML file (``--config``, nested like the saved
``config.yaml``) < command-line flags. The resolved configuration is saved in the run folder as
``config.yaml`` and inside every checkpoint; a saved ``config.yaml`` can be
passed back with ``--config`` to repeat or resume a run.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import UserError
from .recipe import SWITCHES, AugmentRecipe

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
COMMANDS = ("pretrain", "finetune", "probe")
EPOCH_MODES = ("exact", "drop-last")  # see schedule.py
LR_UPDATES = ("step", "epoch")  # see optim.py


@dataclass(frozen=True)
class ModelConfig:
    name: str = "vit_tiny_patch16_224"  # a timm model name (aliases resolved); "" downstream: --init's
    kwargs: dict = field(default_factory=dict)  # extra timm.create_model arguments
    drop_path: float = 0.1  # stochastic depth rate
    init: str | None = None  # finetune/probe: checkpoint to start from
    scratch: bool = False  # finetune: random init, same recipe
    blocks: int | None = None  # probe: transformer blocks kept


@dataclass(frozen=True)
class DataConfig:
    shards: str | None = None  # pretrain: fracbuild data set (directory or URL)
    train: str | None = None  # finetune/probe: ImageFolder tree or WebDataset shards
    val: str | None = None
    crop_pct: float = 0.875  # evaluation: resize to size / crop_pct, centre crop
    input: str = "auto"  # pretrain: auto | stream | memory (auto: stream when the decoded set exceeds the budget)
    memory_budget: float | None = None  # pretrain: GB the decoded set may take; None: half the memory available
    shuffle_buffer: int = 8192  # pretrain, streamed: samples per shuffle window


@dataclass(frozen=True)
class OptimConfig:
    opt: str = "adamw"  # timm create_optimizer_v2 name
    lr: float = 1e-3  # at lr_base_batch global samples per step
    lr_base_batch: int | None = 256  # None: lr is used as given (no scaling)
    weight_decay: float = 0.05
    momentum: float = 0.9  # SGD-type optimizers only
    sched: str = "cosine"  # timm create_scheduler_v2 name
    warmup_epochs: float = 5.0
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5
    scale_warmup_min_lr: bool = False  # also scale warmup_lr and min_lr by global batch / lr_base_batch
    lr_update: str = "step"  # step: a new lr every step; epoch: once per epoch (the released code)
    clip_grad: float | None = None  # max gradient norm; None: no clipping

    def scaled_lr(self, global_batch: int) -> float:
        """The linear scaling rule: lr x global_batch / lr_base_batch."""
        return self._scale(self.lr, global_batch)

    def scaled_warmup_lr(self, global_batch: int) -> float:
        return self._scale(self.warmup_lr, global_batch) if self.scale_warmup_min_lr else self.warmup_lr

    def scaled_min_lr(self, global_batch: int) -> float:
        return self._scale(self.min_lr, global_batch) if self.scale_warmup_min_lr else self.min_lr

    def _scale(self, value: float, global_batch: int) -> float:
        return value * global_batch / self.lr_base_batch if self.lr_base_batch else value


@dataclass(frozen=True)
class BudgetConfig:
    """How long to train; exactly one is set (steps > samples > epochs)."""

    epochs: float | None = 80_000.0
    samples: int | None = None
    steps: int | None = None
    # What an epoch is (schedule.EPOCH_MODES): exact = one pass over every
    # sample, epochs may end inside a batch; drop-last = floor(N / B) whole
    # batches of a fresh permutation, the rest unseen that epoch.
    epoch_mode: str = "exact"


@dataclass(frozen=True)
class RunConfig:
    out: str | None = None  # run folder; default runs/<command>-<model>-<data>-s<seed>
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | auto-fp16 (fp16 on CUDA, fp32 on CPU) | bf16 | fp16 | fp32
    compile: bool = False  # torch.compile the model
    workers: int | None = None  # DataLoader workers per rank; None: chosen from the cores (threads.py)
    threads: int | None = None  # torch intra-op threads; None: chosen on a CPU device, 0: torch's own
    input_path: str = "auto"  # auto | cpu | gpu: where augmentation runs
    fuse_augment: bool | None = None  # compile the GPU augmentation's kernels; None: on CUDA
    gpu_augment_mode: str | None = None  # op-by-op | static | graph; None: graph on CUDA, else op-by-op
    ckpt_every: float = 1000.0  # epochs between checkpoints
    ckpt_minutes: float = 30.0  # minutes of training between checkpoints (0: none by time)
    keep_ckpts: int = 2  # periodic checkpoints kept (final.pt always)
    log_every: int = 50  # steps between metrics records and bar updates
    summary_every: int = 0  # epochs between summary lines; 0: every epoch but >= 100 steps apart
    progress: bool = True


@dataclass(frozen=True)
class TrainConfig:
    command: str
    model: ModelConfig
    data: DataConfig
    augment: AugmentRecipe
    aug_off: tuple[str, ...] = ()
    batch_size: int = 256  # global: samples per optimizer step over all ranks
    batch_per_rank: int | None = None  # when set, batch_size = this x world size (resolved at start)
    recipe_name: str | None = None  # the named recipe the values started from (recipes/NAME.yaml)
    optim: OptimConfig = OptimConfig()
    budget: BudgetConfig = BudgetConfig()
    run: RunConfig = RunConfig()

    def recipe(self) -> AugmentRecipe:
        """The augmentation recipe with the switched-off augmentations removed."""
        return self.augment.without(list(self.aug_off))

    def total_samples(self, samples_per_epoch: int) -> int:
        b = self.budget
        if b.steps is not None:
            return b.steps * self.batch_size
        if b.samples is not None:
            return b.samples
        assert b.epochs is not None, "budget has neither steps, samples nor epochs"
        return math.ceil(b.epochs * samples_per_epoch)

    def total_steps(self, schedule: Any) -> int:
        """Optimizer steps of the budget on ``schedule`` (a schedule.EpochSchedule
        in this run's epoch mode)."""
        b = self.budget
        if b.steps is not None:
            return b.steps
        if b.samples is not None:
            return schedule.steps_for(b.samples)
        assert b.epochs is not None, "budget has neither steps, samples nor epochs"
        return schedule.steps_for_epochs(b.epochs)


# --- the commands' defaults -----------------------------------------------
def defaults(command: str) -> TrainConfig:
    """The paper's recipes: pre-training (DeiT on 1p-frac, mean = std = 0.5),
    fine-tuning (SGD, ImageNet statistics, DeiT augmentation) and a linear
    probe (SGD, light augmentation, frozen backbone)."""
    if command == "pretrain":
        return TrainConfig(command=command, model=ModelConfig(), data=DataConfig(), augment=AugmentRecipe())
    if command == "finetune":
        recipe = AugmentRecipe(mean=IMAGENET_MEAN, std=IMAGENET_STD, vflip=0.0, reprob=0.25)
        return TrainConfig(
            command=command, model=ModelConfig(name=""), data=DataConfig(), augment=recipe, batch_size=96,
            optim=OptimConfig(opt="sgd", lr=0.01, lr_base_batch=None, weight_decay=1e-4, warmup_epochs=10.0,
                              warmup_lr=1e-6, min_lr=1e-5),
            budget=BudgetConfig(epochs=300.0),
            run=RunConfig(ckpt_every=10.0, summary_every=1))
    if command == "probe":
        recipe = AugmentRecipe(mean=IMAGENET_MEAN, std=IMAGENET_STD, vflip=0.0, auto_augment=None,
                               color_jitter=0.0, reprob=0.0, mixup_alpha=0.0, cutmix_alpha=0.0,
                               label_smoothing=0.0)
        return TrainConfig(
            command=command, model=ModelConfig(name="", drop_path=0.0, blocks=4), data=DataConfig(), augment=recipe,
            optim=OptimConfig(opt="sgd", lr=0.1, lr_base_batch=256, weight_decay=0.0, warmup_epochs=5.0,
                              warmup_lr=1e-6, min_lr=0.0),
            budget=BudgetConfig(epochs=90.0),
            run=RunConfig(ckpt_every=10.0, summary_every=1))
    raise ValueError(f"unknown command {command!r}")


def recipe_defaults(command: str, name: str | None = None) -> TrainConfig:
    """``defaults(command)`` with a named recipe (``recipes/NAME.yaml``)
    applied: ``name``, or the command's default recipe when None."""
    from . import recipes

    name = name if name is not None else recipes.DEFAULT.get(command)
    base = defaults(command)
    if not name:
        return base
    payload = recipes.load(name)
    if payload["command"] != command:
        fitting = [n for n in recipes.names() if recipes.load(n)["command"] == command]
        raise UserError(f"recipe {name!r} is for '{payload['command']}', not '{command}'"
                        + (f" (recipes for {command}: {', '.join(fitting)})" if fitting else ""))
    return dataclasses.replace(merge(base, payload, f"recipe {name}"), recipe_name=name)


def resolve_batch(config: TrainConfig, world_size: int) -> TrainConfig:
    """With ``batch_per_rank`` set, the global batch is that times the world size."""
    if config.batch_per_rank is None:
        return config
    if config.batch_per_rank < 1:
        raise UserError(f"--batch-per-rank must be >= 1, got {config.batch_per_rank}")
    return dataclasses.replace(config, batch_size=config.batch_per_rank * world_size)


# --- dict / YAML round trip -------------------------------------------------
_SECTIONS = {"model": ModelConfig, "data": DataConfig, "augment": AugmentRecipe, "optim": OptimConfig,
             "budget": BudgetConfig, "run": RunConfig}


def to_dict(config: TrainConfig) -> dict[str, Any]:
    """Plain nested dict (tuples as lists): for YAML and checkpoints."""
    return _plain(dataclasses.asdict(config))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def from_dict(payload: dict[str, Any], source: str = "configuration") -> TrainConfig:
    """Inverse of :func:`to_dict`; unknown keys are a UserError."""
    if not isinstance(payload, dict) or payload.get("command") not in COMMANDS:
        raise UserError(f"{source}: not a fractrain configuration (no command: pretrain/finetune/probe)")
    return merge(defaults(payload["command"]), payload, source)


def merge(config: TrainConfig, payload: dict[str, Any], source: str) -> TrainConfig:
    """``config`` with the values of a nested mapping (as in config.yaml) applied."""
    changes: dict[str, Any] = {}
    top = {f.name for f in dataclasses.fields(TrainConfig)}
    for key, value in payload.items():
        if key not in top:
            raise UserError(f"{source}: unknown key {key!r} (known: {', '.join(sorted(top))})")
        if key == "command":
            if value != config.command:
                raise UserError(f"{source} is for '{value}', not '{config.command}'")
            continue
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise UserError(f"{source}: {key} must be a mapping")
            changes[key] = _replace_section(getattr(config, key), value, f"{source}: {key}")
        elif key == "aug_off":
            changes[key] = check_switches(value or [])
        else:
            changes[key] = value
    return dataclasses.replace(config, **changes)


def _replace_section(section: Any, values: dict[str, Any], where: str) -> Any:
    names = {f.name: f for f in dataclasses.fields(section)}
    fixed = {}
    for key, value in values.items():
        if key not in names:
            raise UserError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(names))})")
        current = getattr(section, key)
        fixed[key] = tuple(value) if isinstance(current, tuple) and isinstance(value, list) else value
    return dataclasses.replace(section, **fixed)


def override(config: TrainConfig, values: dict[str, Any]) -> TrainConfig:
    """Apply dotted overrides: ``{"optim.lr": 0.1, "batch_size": 64}``."""
    nested: dict[str, Any] = {}
    for dotted, value in values.items():
        section, _, key = dotted.partition(".")
        if key:
            nested.setdefault(section, {})[key] = value
        else:
            nested[section] = value
    return merge(config, nested, "command line")


def check_switches(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    unknown = sorted(set(names) - set(SWITCHES))
    if unknown:
        raise UserError(f"unknown augmentation {', '.join(unknown)}; choose from {', '.join(SWITCHES)}")
    return tuple(dict.fromkeys(names))


def load_yaml(path: str, what: str = "--config ") -> dict[str, Any]:
    """The mapping in the YAML file ``path`` ({} for an empty file);
    UserError naming ``what`` + path when it cannot be read or is not a mapping."""
    try:
        with open(path, encoding="utf-8") as handle:
            payload = yaml.safe_load(handle)
    except OSError as error:
        raise UserError(f"cannot read {what}{path}: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise UserError(f"{what}{path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if payload is None:
        return {}
    if not isinstance(payload, dict):
        raise UserError(f"{what}{path} must hold a mapping")
    return payload


def dump_yaml(config: TrainConfig) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False, default_flow_style=None)


# Keys that may differ between a checkpoint and the run resuming it: they
# change how the run is executed or recorded, not what it computes.
OPERATIONAL = ("run.out", "run.device", "run.workers", "run.threads", "run.progress", "run.log_every", "run.compile",
               "run.keep_ckpts", "run.summary_every", "run.ckpt_every", "run.ckpt_minutes", "run.input_path",
               "run.fuse_augment", "run.gpu_augment_mode",
               "data.shards", "data.train", "data.val", "model.init", "data.input", "data.memory_budget",
               "recipe_name")  # a label: the values it set are compared one by one


def differences(recorded: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, recorded, current) for every non-operational difference."""
    found = []
    for key in sorted(set(recorded) | set(current)):
        dotted = f"{prefix}{key}"
        a, b = recorded.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and key != "kwargs":
            found += differences(a, b, dotted + ".")
        elif a != b and dotted not in OPERATIONAL:
            found.append((dotted, a, b))
    return found
