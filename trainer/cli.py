"""``fractrain``: the command line. It parses options into a frozen
configuration and delegates; every user error becomes one line on stderr
and exit code 2.

    fractrain --shards DIR --model vit_base      pre-train (the default command)
    fractrain pretrain --shards DIR ...          the same, spelled out
    fractrain finetune --init CKPT --train DIR --val DIR
    fractrain probe --init CKPT --blocks K --train DIR --val DIR
    fractrain bench --model vit_tiny --shards DIR
    fractrain experiment FILE.yaml               a grid end to end, report.md
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any, Callable

import click
import yaml

from . import __version__, interrupts, recipes
from .config import (EPOCH_MODES, LR_UPDATES, TrainConfig, check_switches, load_yaml, merge, override, recipe_defaults,
                     resolve_batch)
from .errors import ResumeMismatch, TrainFailure, UserError, run_cli
from .recipe import SWITCHES

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


class DefaultGroup(click.Group):
    """A group whose default command is ``pretrain``: arguments that do not
    start with a command name are handed to it (``fractrain --shards X``)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help", "--version"):
            args = ["pretrain", *args]
        return super().parse_args(ctx, args)


# --- options: (flag(s), config path, click kwargs, help) ----------------------------
def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (tuple, list)):
        return " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _get(cfg: TrainConfig, path: str) -> Any:
    value: Any = cfg
    for part in path.split("."):
        value = getattr(value, part)
    return value


# Options shared by pretrain, finetune and probe. Every value defaults to None
# ("not given"), so only what the user types overrides the command's defaults
# and the --config file; the help shows the command's own default.
TRAIN_OPTIONS: list[tuple[tuple[str, ...], str, dict[str, Any], str]] = [
    (("--model",), "model.name", {}, "Model: vit_tiny, vit_small, vit_base, vit_large (-> *_patch16_224) or any timm "
                                     "model name."),
    (("--drop-path",), "model.drop_path", {"type": float}, "Stochastic depth rate."),
    (("--batch-size", "-b"), "batch_size", {"type": int},
     "Global batch: samples per optimizer step over all ranks (must divide by the number of ranks)."),
    (("--batch-per-rank",), "batch_per_rank", {"type": int},
     "Samples per step on each rank: the global batch becomes this x the number of ranks (--batch-size "
     "given on the command line wins)."),
    (("--epochs",), "budget.epochs", {"type": float}, "Training length in epochs (one epoch = one pass over the "
                                                      "data set; for 1p-frac one image per class)."),
    (("--samples",), "budget.samples", {"type": int}, "Training length in samples (instead of --epochs)."),
    (("--steps",), "budget.steps", {"type": int}, "Training length in optimizer steps (instead of --epochs)."),
    (("--epoch-mode",), "budget.epoch_mode", {"type": click.Choice(["exact", "drop-last"])},
     "What an epoch is: exact = every sample once (an epoch may end inside a batch; ceil(N x epochs / batch) "
     "steps); drop-last = floor(N / batch) whole batches of a fresh permutation (the released code's sampler)."),
    (("--opt",), "optim.opt", {}, "Optimizer (timm create_optimizer_v2 name)."),
    (("--lr",), "optim.lr", {"type": float}, "Learning rate at --lr-base-batch global samples per step."),
    (("--lr-base-batch",), "optim.lr_base_batch", {"type": int},
     "Linear scaling: lr x batch / this. 0: use --lr as given."),
    (("--weight-decay", "--wd"), "optim.weight_decay", {"type": float}, "Weight decay (not on biases and norms)."),
    (("--momentum",), "optim.momentum", {"type": float}, "Momentum of SGD-type optimizers."),
    (("--sched",), "optim.sched", {}, "Learning-rate schedule (timm create_scheduler_v2 name)."),
    (("--warmup-epochs",), "optim.warmup_epochs", {"type": float}, "Linear warm-up length, epochs."),
    (("--warmup-lr",), "optim.warmup_lr", {"type": float}, "Learning rate at the start of warm-up."),
    (("--min-lr",), "optim.min_lr", {"type": float}, "Learning rate at the end of the cosine."),
    (("--scale-warmup-min-lr/--no-scale-warmup-min-lr",), "optim.scale_warmup_min_lr", {"default": None},
     "Scale --warmup-lr and --min-lr by batch / --lr-base-batch like --lr."),
    (("--lr-update",), "optim.lr_update", {"type": click.Choice(["step", "epoch"])},
     "How often the lr changes: every optimizer step, or once per epoch (the released code)."),
    (("--clip-grad",), "optim.clip_grad", {"type": float}, "Clip the gradient norm to this (0: no clipping)."),
    (("--input-size",), "augment.input_size", {"type": int}, "Model input side, pixels."),
    (("--interpolation",), "augment.interpolation", {"type": click.Choice(["bicubic", "bilinear", "nearest"])},
     "Resampling of crops and resizes."),
    (("--mean",), "augment.mean", {"type": float, "nargs": 3}, "Normalisation mean, 3 values in [0, 1]."),
    (("--std",), "augment.std", {"type": float, "nargs": 3}, "Normalisation standard deviation, 3 values."),
    (("--scale",), "augment.scale", {"type": float, "nargs": 2}, "RandomResizedCrop area range, fractions."),
    (("--ratio",), "augment.ratio", {"type": float, "nargs": 2}, "RandomResizedCrop aspect-ratio range."),
    (("--hflip",), "augment.hflip", {"type": float}, "Horizontal flip probability."),
    (("--vflip",), "augment.vflip", {"type": float}, "Vertical flip probability."),
    (("--aa",), "augment.auto_augment", {}, "RandAugment policy (timm syntax); 'none' switches it off."),
    (("--color-jitter",), "augment.color_jitter", {"type": float},
     "Colour jitter strength (timm applies it only without RandAugment)."),
    (("--reprob",), "augment.reprob", {"type": float}, "Random erasing probability."),
    (("--remode",), "augment.remode", {"type": click.Choice(["pixel", "rand", "const"])}, "Random erasing fill."),
    (("--mixup",), "augment.mixup_alpha", {"type": float}, "Mixup alpha (0: off)."),
    (("--cutmix",), "augment.cutmix_alpha", {"type": float}, "CutMix alpha (0: off)."),
    (("--mix-prob",), "augment.mix_prob", {"type": float}, "Probability of mixing a batch."),
    (("--switch-prob",), "augment.switch_prob", {"type": float}, "Probability of CutMix instead of Mixup."),
    (("--smoothing",), "augment.label_smoothing", {"type": float}, "Label smoothing."),
    (("--seed",), "run.seed", {"type": int}, "Seed of the weights, the data order and every augmentation."),
    (("--device",), "run.device", {"type": click.Choice(["auto", "cpu", "cuda"])},
     "Where to train; auto: CUDA when available."),
    (("--precision",), "run.precision", {"type": click.Choice(["auto", "auto-fp16", "bf16", "fp16", "fp32"])},
     "Autocast dtype; auto: bf16 on CUDA, fp32 on the CPU; auto-fp16: fp16 with a gradient scaler on CUDA, "
     "fp32 on the CPU."),
    (("--compile/--no-compile",), "run.compile", {"default": None}, "torch.compile the model."),
    (("--workers",), "run.workers", {"type": int}, "DataLoader worker processes per rank. "
     "The GPU input path uses min(2, N) of them to plan the augmentation ahead; 0: all on the training thread. "
     "[default: on a CPU device half the cores this rank may use (at most 8), on CUDA min(8, cores per rank - 1)]"),
    (("--threads",), "run.threads", {"type": int}, "torch intra-op threads per rank; 0: torch's own count. "
     "[default: on a CPU device the cores this rank may use minus the loader workers (or OMP_NUM_THREADS when "
     "set); on CUDA torch's own]"),
    (("--ckpt-every",), "run.ckpt_every", {"type": float}, "Epochs between checkpoints (one is always written at the end)."),
    (("--ckpt-minutes",), "run.ckpt_minutes", {"type": float},
     "Minutes of training between checkpoints, beside --ckpt-every (0: none by time). Ctrl-C and SIGTERM also "
     "write one after the step in progress."),
    (("--keep-ckpts",), "run.keep_ckpts", {"type": int}, "Periodic checkpoints kept."),
    (("--log-every",), "run.log_every", {"type": int}, "Steps between metrics records and progress-bar updates."),
    (("--summary-every",), "run.summary_every", {"type": int},
     "Epochs between summary lines (and evaluations); 0: every epoch, but at least 100 steps apart."),
    (("--progress/--no-progress",), "run.progress", {"default": None}, "Progress bar on stderr."),
    (("--out",), "run.out", {"type": click.Path(file_okay=False)},
     "Run folder. [default: runs/<command>-<model>-<data>-s<seed>]"),
]
PRETRAIN_OPTIONS = [
    (("--shards",), "data.shards", {}, "fracbuild data set: a directory or an s3:// / https:// prefix holding "
                                       "manifest.json and the shards."),
    (("--input",), "data.input", {"type": click.Choice(["auto", "stream", "memory"])},
     "memory: decode the whole set once before the first step; stream: read the shards as training goes "
     "(for sets larger than memory); auto: stream when the decoded set (N x H x W x channels bytes) exceeds "
     "--memory-budget."),
    (("--memory-budget",), "data.memory_budget", {"type": float},
     "GB (1e9 bytes) the decoded set may take before --input auto streams it. [default: half the memory "
     "available at the start]"),
    (("--shuffle-buffer",), "data.shuffle_buffer", {"type": int},
     "Streamed input: samples per shuffle window (each window of a rank's shards is shuffled; memory holds "
     "two or three windows of encoded samples per rank: the current ones and the next, read ahead)."),
    (("--augment", "input_path"), "run.input_path", {"type": click.Choice(["auto", "cpu", "gpu"])},
     "Input path: cpu (timm transforms in DataLoader workers) or gpu (batched augmentation on the device); "
     "auto: gpu on CUDA when available."),
    (("--fuse-augment/--no-fuse-augment",), "run.fuse_augment", {"default": None},
     "GPU input path: torch.compile its heaviest functions into fused kernels (less GPU memory traffic; "
     "compiled during the first steps). [default: on for CUDA, off on the CPU]"),
    (("--gpu-augment-mode",), "run.gpu_augment_mode", {"type": click.Choice(["op-by-op", "static", "graph"])},
     "GPU input path: op-by-op runs each op on the samples that drew it (least device work); static lays every "
     "batch out in the same shapes (each op on every sample; one compiled graph); graph also replays that as "
     "CUDA graphs (least host time; needs the image cache on the GPU, else it runs as static). "
     "[default: graph on CUDA, op-by-op on the CPU]"),
]
DOWNSTREAM_OPTIONS = [
    (("--init",), "model.init", {"type": click.Path(dir_okay=False)},
     "Checkpoint to start from (its head is dropped); its architecture is used."),
    (("--scratch",), "model.scratch", {"is_flag": True, "default": None},
     "Random initialisation, same recipe (architecture from --init or --model)."),
    (("--train",), "data.train", {}, "Training set: ImageFolder tree (DIR/<class>/<image>), WebDataset shards, or "
                                     "cifar10:DIR / cifar100:DIR (torchvision's files under DIR; the training split)."),
    (("--val",), "data.val", {}, "Validation set, same layouts as --train (cifar10:DIR / cifar100:DIR: the test "
                                 "split)."),
    (("--crop-pct",), "data.crop_pct", {"type": float}, "Evaluation: resize to input-size / crop-pct, centre-crop."),
]
PROBE_OPTIONS = [
    (("--blocks",), "model.blocks", {"type": int}, "Transformer blocks kept before the linear classifier (K)."),
]


def flag_for(key: str) -> str:
    """The flag that sets the configuration key ``key`` (dotted, as in
    config.yaml), or the key itself when no flag does."""
    named = {"model.kwargs": "--model-arg", "aug_off": "--aug-off"}
    for flags, path, _, _ in TRAIN_OPTIONS + PRETRAIN_OPTIONS + DOWNSTREAM_OPTIONS + PROBE_OPTIONS:
        named.setdefault(path, flags[0].split("/")[0])
    return named.get(key, key)


def recipe_names(command: str) -> list[str]:
    """The shipped recipes for ``command``."""
    return [name for name in recipes.names() if recipes.load(name)["command"] == command]


def _dest(flags: tuple[str, ...], path: str) -> str:
    return path.replace(".", "__")


def train_options(command: str, extra: list) -> Callable:
    """Decorator adding every option of ``command`` with its default in the help."""
    base = recipe_defaults(command)
    table = list(extra) + TRAIN_OPTIONS

    def decorate(function: Callable) -> Callable:
        for flags, path, kwargs, text in reversed(table):
            names = [f for f in flags if f.startswith("-")]
            default = _get(base, path)
            shown = "" if "[default" in text else (
                " [default: from --init]" if path == "model.name" and command != "pretrain" else f" [default: {_show(default)}]")
            if path == "model.scratch":
                shown = ""
            if path == "data.shards":
                shown = " [required]"
            if path == "budget.epochs" and command != "pretrain":
                text = "Training length in epochs (one epoch = one pass over the --train set)."
            options = {"default": None, **kwargs}
            function = click.option(*names, _dest(flags, path), help=text + shown, **options)(function)
        function = click.option("--aug-off", "aug_off", multiple=True, metavar="NAME[,NAME]",
                                help=f"Switch augmentations off (the paper's Table 9): {', '.join(SWITCHES)}. "
                                     "Repeat or separate with commas.")(function)
        function = click.option("--model-arg", "model_args", multiple=True, metavar="KEY=VALUE",
                                help="Extra timm create_model argument (VALUE read as YAML), e.g. depth=6; "
                                     "repeatable.")(function)
        function = click.option("--resume", default=None, metavar="auto|PATH",
                                help="Continue a run: auto = the newest checkpoint in --out (or start fresh when "
                                     "there is none); PATH = that checkpoint.")(function)
        function = click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                                help="YAML defaults, nested like a run's config.yaml; flags override them.")(function)
        function = click.option("--recipe", "recipe", default=None, metavar="NAME",
                                help=f"Named recipe to start from ({', '.join(recipe_names(command)) or 'none yet'}, "
                                     "files in fractrain/recipes/); --config and flags override it. "
                                     + (f"[default: {recipes.DEFAULT[command]}]" if recipes.DEFAULT.get(command)
                                        else "[default: none]"))(function)
        return function

    return decorate


def resolve(command: str, values: dict[str, Any]) -> TrainConfig:
    """defaults(command) < --recipe (or the command's default recipe) < --config file < flags."""
    from .distributed import world_size_from_env
    from .model import resolve_name

    cfg = recipe_defaults(command, values.get("recipe"))
    if values.get("config_path"):
        payload = load_yaml(values["config_path"])
        if "batch_size" in payload and "batch_per_rank" not in payload:
            payload = {**payload, "batch_per_rank": None}  # a global batch in the file wins over the recipe's
        cfg = merge(cfg, payload, f"--config {values['config_path']}")
    given: dict[str, Any] = {}
    for key, value in values.items():
        if "__" not in key and key not in ("batch_size", "batch_per_rank"):
            continue
        if value is None or value == ():
            continue
        path = key.replace("__", ".")
        if path == "augment.auto_augment" and str(value).lower() in ("none", "off", ""):
            value = None
        elif path == "optim.lr_base_batch" and value == 0:
            value = None
        elif path == "optim.clip_grad" and value == 0:
            value = None
        given[path] = value
    if "batch_size" in given:
        given.setdefault("batch_per_rank", None)
    budgets = [p for p in ("budget.epochs", "budget.samples", "budget.steps") if p in given]
    if len(budgets) > 1:
        raise UserError(f"give one of --epochs, --samples, --steps (got {', '.join('--' + b.split('.')[1] for b in budgets)})")
    if budgets:
        if given[budgets[0]] is None or given[budgets[0]] <= 0:
            raise UserError(f"--{budgets[0].split('.')[1]} must be > 0")
        for other in ("budget.epochs", "budget.samples", "budget.steps"):
            given.setdefault(other, None)
    if values.get("model_args"):
        kwargs = dict(cfg.model.kwargs)
        for item in values["model_args"]:
            key, sep, raw = item.partition("=")
            if not sep or not key.strip():
                raise UserError(f"--model-arg {item!r}: expected KEY=VALUE")
            try:
                kwargs[key.strip()] = yaml.safe_load(raw)
            except yaml.YAMLError:
                raise UserError(f"--model-arg {item!r}: VALUE is not valid YAML") from None
        given["model.kwargs"] = kwargs
    if values.get("aug_off"):
        names = [n.strip() for item in values["aug_off"] for n in item.split(",") if n.strip()]
        given["aug_off"] = tuple(dict.fromkeys(cfg.aug_off + check_switches(names)))
    cfg = resolve_batch(override(cfg, given), world_size_from_env())
    if cfg.model.name:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name=resolve_name(cfg.model.name)))
    _validate(cfg)
    return cfg


def _validate(cfg: TrainConfig) -> None:
    checks = [
        (cfg.optim.lr > 0, f"--lr must be > 0, got {cfg.optim.lr}"),
        (cfg.augment.input_size >= 8, f"--input-size must be >= 8, got {cfg.augment.input_size}"),
        (cfg.run.log_every >= 1, f"--log-every must be >= 1, got {cfg.run.log_every}"),
        (cfg.run.ckpt_every > 0, f"--ckpt-every must be > 0, got {cfg.run.ckpt_every}"),
        (cfg.run.ckpt_minutes >= 0, f"--ckpt-minutes must be >= 0, got {cfg.run.ckpt_minutes}"),
        (cfg.run.keep_ckpts >= 1, f"--keep-ckpts must be >= 1, got {cfg.run.keep_ckpts}"),
        (0 <= cfg.model.drop_path < 1, f"--drop-path must lie in [0, 1), got {cfg.model.drop_path}"),
        (cfg.optim.lr_base_batch is None or cfg.optim.lr_base_batch > 0, "--lr-base-batch must be >= 0"),
        (cfg.run.summary_every >= 0, "--summary-every must be >= 0"),
        (cfg.data.shuffle_buffer >= 1, f"--shuffle-buffer must be >= 1, got {cfg.data.shuffle_buffer}"),
        (cfg.data.memory_budget is None or cfg.data.memory_budget > 0,
         f"--memory-budget must be > 0 GB, got {cfg.data.memory_budget}"),
        (cfg.budget.epoch_mode in EPOCH_MODES, f"epoch_mode must be {' or '.join(EPOCH_MODES)}"),
        (cfg.optim.lr_update in LR_UPDATES, f"lr_update must be {' or '.join(LR_UPDATES)}"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)
    if cfg.command == "probe" and cfg.model.blocks is not None and cfg.model.blocks < 1:
        raise UserError(f"--blocks must be >= 1, got {cfg.model.blocks}")
    try:
        cfg.recipe()
    except ValueError as error:
        raise UserError(str(error)) from None


# --- commands -------------------------------------------------------------------
@click.group(cls=DefaultGroup, context_settings=CONTEXT, no_args_is_help=True)
@click.version_option(__version__, prog_name="fractrain")
def cli() -> None:
    """Pre-train timm models on fracbuild shards, then fine-tune or linear-probe.

    Pre-training is the default command: ``fractrain --shards DIR --model vit_base``
    is ``fractrain pretrain --shards DIR --model vit_base``. Multi-GPU and
    multi-node: start the same command under ``torchrun``.
    """


@cli.command(context_settings=CONTEXT)
@train_options("pretrain", PRETRAIN_OPTIONS)
def pretrain(resume: str | None, **values: Any) -> None:
    """Pre-train on a fracbuild data set with the released code's recipe
    (--recipe paper: DeiT augmentation, mean = std = 0.5, AdamW 1e-3 x batch
    / 512, cosine updated per epoch, drop-last epochs, fp16 on CUDA)."""
    from . import pretrain as runner

    cfg = resolve("pretrain", values)
    if not cfg.data.shards:
        raise UserError("--shards is required (a fracbuild data set: directory or URL)")
    runner.run(cfg, resume=resume)


@cli.command(context_settings=CONTEXT)
@train_options("finetune", DOWNSTREAM_OPTIONS)
def finetune(resume: str | None, **values: Any) -> None:
    """Fine-tune a pre-trained checkpoint (or, with --scratch, a random
    initialisation) on an ImageFolder tree or WebDataset shards; reports
    top-1/top-5 every epoch and the best."""
    from . import finetune as runner

    cfg = resolve("finetune", values)
    summary = runner.run(cfg, resume=resume)
    _print_result(summary)


@cli.command(context_settings=CONTEXT)
@train_options("probe", DOWNSTREAM_OPTIONS + PROBE_OPTIONS)
def probe(resume: str | None, **values: Any) -> None:
    """Linear probe: freeze the checkpoint's backbone cut after --blocks
    transformer blocks and train a linear classifier on its features."""
    from . import probe as runner

    cfg = resolve("probe", values)
    summary = runner.run(cfg, resume=resume)
    _print_result(summary)


@cli.command(context_settings=CONTEXT)
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--work", type=click.Path(file_okay=False), default=None,
              help="Folder for the experiment's data sets, runs and report. [default: runs/experiment-<name>]")
def experiment(file: str, work: str | None) -> None:
    """Run an experiment file end to end: build each row's data set (reused
    when its manifest matches), pre-train, fine-tune and/or probe per seed (and
    a scratch baseline), then write report.md, loss.png, top1.png and
    probe.png. Rerun the same command to skip finished runs and resume a
    stopped one. Under torchrun every run uses all the ranks; rank 0 builds
    the data and writes the report."""
    from . import experiment as runner

    def run_command(argv: list[str]) -> int:  # errors propagate: main() turns them into one line
        cli.main(args=argv, prog_name="fractrain", standalone_mode=False)
        return 0

    report = runner.run(file, work, run_command, _log)
    if os.environ.get("RANK", "0") == "0":
        click.echo(report)


def _print_result(summary: dict[str, Any]) -> None:
    keys = ("command", "model", "blocks", "best_top1", "best_top5", "steps", "epochs", "scratch")
    if os.environ.get("RANK", "0") == "0":
        click.echo(json.dumps({k: summary[k] for k in keys if k in summary}))


@cli.command(context_settings=CONTEXT)
@click.option("--model", default="vit_tiny", show_default=True, help="Model (alias or timm name).")
@click.option("--shards", required=True, help="fracbuild data set (directory or URL).")
@click.option("--batch-size", "-b", type=int, default=256, show_default=True, help="Samples per step.")
@click.option("--steps", type=int, default=20, show_default=True, help="Steps per timed window.")
@click.option("--warmup", type=int, default=10, show_default=True, help="Untimed steps first (compilation too).")
@click.option("--windows", type=int, default=3, show_default=True, help="Timed windows; the median is reported.")
@click.option("--compile/--no-compile", default=False, help="torch.compile the model. [default: off]")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where to time; auto: CUDA when available.")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), default="auto", show_default=True,
              help="Autocast dtype; auto: bf16 on CUDA, fp32 on the CPU.")
@click.option("--workers", type=int, default=None, help="DataLoader workers of the CPU path; the GPU paths use min(2, N) "
              "to plan the augmentation ahead. [default: as pretrain's --workers on the timed device]")
@click.option("--input-size", type=int, default=224, show_default=True, help="Model input side, pixels.")
@click.option("--model-arg", "model_args", multiple=True, metavar="KEY=VALUE", help="Extra create_model argument.")
@click.option("--paths", default="model,gpu,cpu", show_default=True,
              help="Which inputs to time, comma-separated: model (synthetic), gpu, gpu-serial "
                   "(the GPU path without its side stream), cpu.")
@click.option("--fuse-augment/--no-fuse-augment", default=None,
              help="Compile the GPU augmentation's heaviest functions into fused kernels. [default: on for CUDA]")
@click.option("--gpu-augment-mode", type=click.Choice(["op-by-op", "static", "graph"]), default=None,
              help="The GPU paths' augmentation mode (see pretrain --help). [default: graph on CUDA, op-by-op on the CPU]")
@click.option("--gpu-resize", type=click.Choice(["fp32", "tf32x2", "taps"]), default=None,
              help="How the GPU paths' crop resizes: fp32 or tf32x2 matrix products, or taps (each output pixel "
                   "from its window's pixels; slower than tf32x2 on the GPUs measured, benchmarks/RESULTS.md). [default: tf32x2 on CUDA, fp32 on the CPU]")
@click.option("--profile-steps", type=int, default=0, show_default=True,
              help="After the timed windows, profile this many more steps of each path (torch.profiler) and "
                   "print where the time goes: wall and device-busy ms per step, per CUDA stream, top kernels.")
@click.option("--trace-dir", type=click.Path(file_okay=False), default=None,
              help="With --profile-steps: also write each path's chrome trace there (trace-PATH.json.gz).")
@click.option("--host-profile-steps", type=int, default=0, show_default=True,
              help="Then run this many more steps of each path under cProfile and print where the training "
                   "thread's time goes (own and cumulative ms per step of the top functions).")
@click.option("--high-priority-step/--no-high-priority-step", default=False,
              help="On CUDA, run the training steps on a CUDA stream of the highest priority, so that the GPU "
                   "augmentation's kernels (side stream, normal priority) fill the SMs the model leaves idle. "
                   "[default: off]")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON line.")
def bench(model: str, shards: str, batch_size: int, steps: int, warmup: int, windows: int, compile: bool, device: str,
          precision: str, workers: int | None, input_size: int, model_args: tuple[str, ...], paths: str,
          fuse_augment: bool | None, gpu_augment_mode: str | None, gpu_resize: str | None, profile_steps: int,
          trace_dir: str | None, host_profile_steps: int, high_priority_step: bool, as_json: bool) -> None:
    """Images/s of the training step: model-bound (synthetic input on the
    device), GPU-augmented and CPU-augmented, and their ratios."""
    from . import bench as runner
    from . import threads

    if workers is None:
        import torch

        on_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        workers = threads.plan("cuda" if on_cuda else "cpu", 1, None, None).workers
    for flag, value, least in (("--batch-size", batch_size, 1), ("--steps", steps, 1), ("--windows", windows, 1),
                               ("--warmup", warmup, 0), ("--workers", workers, 0),
                               ("--profile-steps", profile_steps, 0), ("--host-profile-steps", host_profile_steps, 0)):
        if value < least:
            raise UserError(f"{flag} must be >= {least}, got {value}")
    if trace_dir:
        if not profile_steps:
            raise UserError("--trace-dir needs --profile-steps")
        os.makedirs(trace_dir, exist_ok=True)
    chosen = tuple(p.strip() for p in paths.split(",") if p.strip())
    unknown = sorted(set(chosen) - set(runner.PATHS))
    if unknown or not chosen:
        raise UserError(f"--paths takes {', '.join(runner.PATHS)}; got {paths!r}")
    # The model, optimizer and recipe of a pre-training run with these flags.
    config = resolve("pretrain", {
        "model_args": model_args, "model__name": model, "data__shards": shards, "batch_size": batch_size,
        "augment__input_size": input_size, "run__device": device, "run__precision": precision,
        "run__compile": compile, "run__workers": workers, "run__fuse_augment": fuse_augment,
        "run__gpu_augment_mode": gpu_augment_mode})
    result = runner.run(config, steps=steps, warmup=warmup, windows=windows, paths=chosen,
                        resize_precision=gpu_resize, profile_steps=profile_steps,
                        trace_dir=trace_dir, host_profile_steps=host_profile_steps,
                        high_priority_step=high_priority_step, log=_log)
    if as_json:
        click.echo(json.dumps(result))
        return
    for key in ("gpu_augment_mode", "model_images_per_s", "gpu_augment_images_per_s",
                "gpu_serial_augment_images_per_s", "cpu_augment_images_per_s", "gpu_vs_model", "gpu_serial_vs_model",
                "cpu_vs_model", "gpu_vs_cpu", "peak_gpu_memory_gb"):
        if key in result:
            click.echo(f"{key}: {result[key]}")


def _log(message: str) -> None:
    click.echo(message, err=True)


# Options of fracbuild that fractrain takes from the environment instead.
OPTION_HINTS = {
    "--endpoint-url": "fractrain reads the S3 endpoint from $FRACBUILD_ENDPOINT_URL or AWS_ENDPOINT_URL",
    "--timeout": "fractrain reads the S3 timeout, seconds, from $FRACBUILD_TIMEOUT",
}


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the CLI and turns every known failure into one line."""
    quiet = os.environ.get("RANK", "0") != "0"  # under torchrun, rank 0 speaks for all

    def say(message: str) -> None:
        if not quiet:
            click.echo(message, err=True)

    def explain(error: UserError) -> str:
        return error.naming(flag_for(error.key)) if isinstance(error, ResumeMismatch) else str(error)

    interrupts.set_command(argv)
    with interrupts.sigterm_raises():
        return run_cli(cli, argv, "fractrain", failures=(TrainFailure,), say=say, option_hints=OPTION_HINTS,
                       explain=explain,
                       interrupted="interrupted (SIGINT) outside the training steps: no new checkpoint; "
                                   "--resume auto continues from the last one, if the run has any")


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
