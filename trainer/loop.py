"""The training loop shared by pre-training, fine-tuning and probing.

``fit(job)`` runs steps ``start .. total`` of the job's batch schedule:
one optimizer step per global batch, the lr set from the schedule for that
step, a metrics record every ``log_every`` steps (mean loss over all ranks,
lr, images/s), a summary line (and, downstream, an evaluation) at epoch
boundaries, periodic checkpoints every ``ckpt_every`` epochs and every
``ckpt_minutes`` of training, and ``final.pt`` + ``summary.json`` at the end.
SIGINT and SIGTERM stop the loop after the step in progress, with a
checkpoint and the command that continues the run (:mod:`.interrupts`).

Resume is exact: batches are a pure function of the step (schedule +
per-step augmentation seeds), and the checkpoint holds model, optimizer,
scheduler, scaler and every rank's generator states.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.distributed as torch_dist
from torch import nn
from tqdm import tqdm

from . import checkpoint as ckpt
from . import distributed as dist
from . import interrupts
from .config import TrainConfig, differences, dump_yaml, to_dict
from .errors import ResumeMismatch, TrainFailure, UserError
from .inputs.protocol import InputPipeline
from .optim import create_optimizer, create_schedule, current_lr, describe, lr_position
from .runfolder import RunFolder, remove_if_unused
from .schedule import EpochSchedule, mix_seed

SUMMARY_MIN_STEPS = 100  # auto summary cadence: lines at least this many steps apart
ESTIMATE_STEPS = 3  # steps timed, after the first, for the CPU's time forecast


def resolve_precision(requested: str, device: torch.device) -> str:
    """auto: bf16 on CUDA; auto-fp16: fp16 (with a gradient scaler) on CUDA;
    both fp32 on the CPU, where fp16 autocast is not offered."""
    if requested not in ("auto", "auto-fp16", "bf16", "fp16", "fp32"):
        raise UserError(f"--precision must be auto, auto-fp16, bf16, fp16 or fp32, got {requested!r}")
    if requested in ("auto", "auto-fp16"):
        return ("bf16" if requested == "auto" else "fp16") if device.type == "cuda" else "fp32"
    if requested == "fp16" and device.type != "cuda":
        raise UserError("--precision fp16 needs a CUDA device (use bf16 or fp32 on the CPU)")
    return requested


def precision_note(requested: str, resolved: str) -> str:
    """Why the resolved precision differs from an fp16 request, for the log."""
    if requested == "auto-fp16" and resolved != "fp16":
        return " (auto-fp16: fp16 autocast and its gradient scaler are CUDA-only, so fp32 without a scaler here)"
    return ""


class Stepper:
    """One optimizer step: forward under autocast, backward, (clip,) step.

    ``module`` is the plain model (what checkpoints save); ``net`` is what
    runs: DDP-wrapped under torchrun and optionally ``torch.compile``d.
    """

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
                 ctx: dist.Context, precision: str, compile: bool = False, clip_grad: float | None = None):
        self.module = module
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.clip_grad = clip_grad
        self.device = ctx.device
        net: nn.Module = module
        if ctx.distributed:
            net = nn.parallel.DistributedDataParallel(
                module, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
        if compile:
            net = torch.compile(net)
        self.net = net
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=precision == "fp16")

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            loss = self.loss_fn(self.net(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.clip_grad:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.module.parameters(), self.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()


@dataclass
class Job:
    """What a command hands to :func:`fit`."""

    config: TrainConfig
    ctx: dist.Context
    model: nn.Module  # plain module, on ctx.device
    pipeline: InputPipeline
    schedule: EpochSchedule
    total_steps: int
    num_classes: int
    model_name: str
    folder: RunFolder
    resume: dict[str, Any] | None = None  # a loaded checkpoint to continue
    resume_path: str | None = None
    manifest_sha256: str | None = None
    evaluate: Callable[[nn.Module, Callable], dict[str, float]] | None = None  # (module, autocast) -> metrics
    log: Callable[[str], None] = lambda m: None
    on_step: Callable[[int], None] | None = None  # called after every step (tests: simulate a kill)
    extra: dict[str, Any] = field(default_factory=dict)  # summary.json additions


def check_resume(payload: dict[str, Any], path: str, config: TrainConfig, model_name: str, num_classes: int,
                 manifest_sha256: str | None) -> None:
    """UserError when ``payload`` cannot continue this run exactly."""
    ckpt.check_fits(payload, path, model_name, num_classes, manifest_sha256)
    recorded = payload.get("config") or {}
    if recorded.get("command") != config.command:
        raise UserError(f"checkpoint {path} is from '{recorded.get('command')}', not '{config.command}'")
    found = differences(recorded, to_dict(config))
    if found:
        key, was, now = found[0]
        raise ResumeMismatch(path, key, was, now, len(found) - 1)


def summary_every(config: TrainConfig, schedule: EpochSchedule) -> float:
    """Epochs between summary lines (and evaluations)."""
    if config.run.summary_every > 0:
        return float(config.run.summary_every)
    return float(max(1, math.ceil(SUMMARY_MIN_STEPS / schedule.steps_per_epoch)))


def _crossed(schedule: EpochSchedule, step: int, every: float) -> bool:
    """Whether a multiple of ``every`` epochs was completed by step ``step``."""
    if every <= 0:
        return False
    return (math.floor(schedule.epoch_at(step) / every + 1e-9)
            > math.floor(schedule.epoch_at(step - 1) / every + 1e-9))


class Forecast:
    """On the CPU, where a run can take days, one line after the first few
    steps saying how long the rest takes (the first step, which pays for
    allocation and warm-up, is not timed)."""

    def __init__(self, start_step: int, total: int, enabled: bool = True):
        self.start_step, self.total, self.enabled = start_step, total, enabled
        self.first_done: float | None = None

    def after(self, step: int) -> str | None:
        """Called after each step; the forecast line once, else None."""
        if not self.enabled or step >= self.total:
            return None
        done = step - self.start_step
        if done == 1:
            self.first_done = time.perf_counter()
        elif done == 1 + ESTIMATE_STEPS and self.first_done is not None:
            per_step = (time.perf_counter() - self.first_done) / ESTIMATE_STEPS
            left = self.total - step
            return f"on the CPU a step takes {per_step:.3g} s: {_count(left, 'step')} to go, about {_duration(per_step * left)}"
        return None


def _agree(ctx: dist.Context, signum: int | None, due: bool) -> tuple[int, bool]:
    """(signal to stop on or 0, whether a time-based checkpoint is due), the
    same on every rank: the largest signal any rank got, rank 0's clock."""
    if not ctx.distributed:
        return signum or 0, due
    flags = torch.tensor([float(signum or 0), float(due and ctx.is_main)], device=ctx.device)
    torch_dist.all_reduce(flags, op=torch_dist.ReduceOp.MAX)
    return int(flags[0].item()), bool(flags[1].item())


def fit_in_folder(job: Job, out: str, existed: bool) -> dict[str, Any]:
    """:func:`fit`; on any failure (a user error, an interrupt) close the run
    folder and, on the main rank, remove it if this run created it and it
    holds nothing worth keeping, so no half-run folder looks finished."""
    try:
        return fit(job)
    except BaseException:
        job.folder.close()
        if job.ctx.is_main:
            remove_if_unused(out, existed)
        raise


def fit(job: Job) -> dict[str, Any]:
    cfg, ctx, schedule = job.config, job.ctx, job.schedule
    model = job.model
    precision = resolve_precision(cfg.run.precision, ctx.device)
    optimizer = create_optimizer(model, cfg.optim, schedule.global_batch)
    scheduler = create_schedule(optimizer, cfg.optim, job.total_steps, schedule.steps_per_epoch,
                                schedule.global_batch)
    from timm.loss import SoftTargetCrossEntropy

    start_step, best = 0, {}
    if job.resume is not None:
        model.load_state_dict(job.resume["model"])
        optimizer.load_state_dict(job.resume["optimizer"])
        scheduler.load_state_dict(job.resume["scheduler"])
        start_step = int(job.resume["step"])
        best = dict(job.resume.get("best") or {})
    # With Mixup the targets are soft; without it they are label-smoothed
    # one-hot vectors, for which this equals LabelSmoothingCrossEntropy.
    stepper = Stepper(model, optimizer, SoftTargetCrossEntropy(), ctx, precision, compile=cfg.run.compile,
                      clip_grad=cfg.optim.clip_grad)
    if job.resume is not None and job.resume.get("scaler"):
        stepper.scaler.load_state_dict(job.resume["scaler"])

    # Generator states last, right before the first step, so that nothing in
    # between (model wrapping, compilation) shifts the draws.
    rng = (job.resume or {}).get("rng") or []
    if job.resume is not None and len(rng) == ctx.world_size:
        ckpt.set_rng_state(rng[ctx.rank])
    else:
        if job.resume is not None:
            job.log(f"warning: checkpoint has generator states for {len(rng)} rank(s), this run has "
                    f"{ctx.world_size}: drop-path draws are reseeded (data order is unaffected)")
        torch.manual_seed(mix_seed(cfg.run.seed, 0xD80, ctx.rank, start_step))

    job.folder.open(dump_yaml(cfg), start_step)
    total = job.total_steps
    b = schedule.global_batch
    if ctx.is_main:
        job.log(f"{cfg.command}: {job.model_name}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M "
                f"parameters, {job.num_classes} classes, {schedule.num_samples} samples per epoch")
        epochs = schedule.epoch_at(total)
        job.log(f"global batch {b} = {_count(ctx.world_size, 'rank')} x {schedule.local_batch}; "
                f"{_count(total, 'step')} = {_count(total * b, 'sample')} = {epochs:.4g} {schedule.mode} "
                f"epoch{'' if epochs == 1 else 's'}; {describe(cfg.optim, b)}; "
                f"{precision}{precision_note(cfg.run.precision, precision)} on {ctx.device.type}; "
                f"input path {job.pipeline.name}"
                + (f"; resuming at step {start_step} ({job.resume_path})" if job.resume is not None else ""))
    every_summary = summary_every(cfg, schedule)

    def save(path: str, final: bool = False) -> None:
        states = dist.gather_objects(ctx, ckpt.rng_state())
        if ctx.is_main:
            ckpt.save(path, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": stepper.scaler.state_dict(),
                "step": step, "epoch": schedule.epoch_at(step), "rng": states, "config": to_dict(cfg),
                "manifest_sha256": job.manifest_sha256, "model_name": job.model_name,
                "num_classes": job.num_classes, "world_size": ctx.world_size, "best": best, "final": final,
                "first_loss": first_loss,
                # The streamed input's position (stream_schedule.StreamSchedule.position), checked on resume.
                **({"stream": job.pipeline.position(step)} if hasattr(job.pipeline, "position") else {})})
            if not final:
                ckpt.prune(job.folder.path, cfg.run.keep_ckpts)

    bar = tqdm(total=total, initial=start_step, unit="step", dynamic_ncols=True, file=sys.stderr, mininterval=1.0,
               disable=not (cfg.run.progress and ctx.is_main), smoothing=0.05)

    def say(message: str) -> None:
        if ctx.is_main:
            (bar.write(message, file=sys.stderr) if not bar.disable else job.log(message))

    step = start_step
    started = time.perf_counter()
    window_start, window_step = started, start_step
    loss_sum = torch.zeros((), device=ctx.device)
    loss_count = 0
    # The run's first logged loss, not this segment's: a resumed run keeps it.
    first_loss, last_loss = (job.resume or {}).get("first_loss"), None
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)
    model.train()
    last_save = time.monotonic()
    forecast = Forecast(start_step, total, enabled=ctx.device.type == "cpu")
    # tqdm closes on the way out, so an error line is never followed by a bar.
    with interrupts.deferred() as stop, bar:
        for x, y in job.pipeline.batches(start_step, total):
            scheduler.step_update(lr_position(cfg.optim, schedule, step))  # a pure function of the step
            loss_sum += stepper(x, y)
            loss_count += 1
            step += 1
            bar.update(1)
            if job.on_step is not None:
                job.on_step(step)
            message = forecast.after(step)
            if message:
                say(message)
            boundary = _crossed(schedule, step, every_summary) or step == total
            if step % cfg.run.log_every == 0 or boundary or step == start_step + 1:
                mean = dist.all_reduce_sum(ctx, loss_sum / loss_count) / ctx.world_size
                value = float(mean)  # a host sync, once per log interval
                if not math.isfinite(value):
                    raise TrainFailure(f"loss became {value} at step {step}; the last checkpoint is resumable")
                now = time.perf_counter()
                rate = (step - window_step) * b / max(now - window_start, 1e-9)
                window_start, window_step = now, step
                first_loss = value if first_loss is None else first_loss
                last_loss = value
                lr = current_lr(optimizer)
                record = {"step": step, "epoch": round(schedule.epoch_at(step), 4), "loss": value, "lr": lr,
                          "images_per_s": round(rate, 1), "time_s": round(now - started, 2)}
                job.folder.record(record, {"train/loss": value, "train/lr": lr, "train/images_per_s": rate})
                bar.set_postfix_str(f"loss {value:.4f} lr {lr:.2e} {rate:,.0f} img/s", refresh=False)
                loss_sum.zero_()
                loss_count = 0
            if boundary:
                line = (f"epoch {schedule.epoch_at(step):.6g}/{schedule.epoch_at(total):.6g} step {step}/{total} "
                        f"loss {last_loss:.4f} lr {current_lr(optimizer):.3e} {rate:,.0f} img/s "
                        f"elapsed {_clock(time.perf_counter() - started)}")
                if job.evaluate is not None:
                    metrics = job.evaluate(model, stepper.autocast)
                    for key, value in metrics.items():
                        if key.startswith("top") and value >= best.get(key, -1.0):
                            best[key] = value
                    job.folder.record({"step": step, "epoch": round(schedule.epoch_at(step), 4), "event": "eval",
                                       **metrics, **{f"best_{k}": v for k, v in best.items()}},
                                      {f"eval/{k}": v for k, v in metrics.items()})
                    line += " " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
                    line += " (best " + " ".join(f"{k} {v:.4f}" for k, v in best.items()) + ")"
                    model.train()
                if step == total:
                    bar.close()  # the final bar drawn once, above the last line, not redrawn below it
                say(line)
            if step < total:
                # Ranks agree on stopping and on a time-based checkpoint (saving
                # gathers from all of them); under torchrun at log points only,
                # where they synchronise anyway.
                signum, due = 0, False
                if not ctx.distributed or step % cfg.run.log_every == 0:
                    due = cfg.run.ckpt_minutes > 0 and time.monotonic() - last_save >= cfg.run.ckpt_minutes * 60
                    signum, due = _agree(ctx, stop.signum, due)
                if signum:
                    path = job.folder.file(ckpt.periodic_name(step))
                    save(path)
                    bar.close()  # before the message, so no bar is drawn below it
                    raise interrupts.Interrupted(signum, (
                        f"interrupted ({interrupts.signal_name(signum)}) at step {step} of {total}; checkpoint "
                        f"{path} written; to continue: {interrupts.resume_command(job.folder.path)}"))
                if due or _crossed(schedule, step, cfg.run.ckpt_every):
                    save(job.folder.file(ckpt.periodic_name(step)))
                    last_save = time.monotonic()
    elapsed = time.perf_counter() - started
    save(job.folder.file(ckpt.FINAL), final=True)
    summary = {
        "command": cfg.command, "model": job.model_name, "num_classes": job.num_classes, "steps": step,
        "epochs": schedule.epoch_at(step), "global_batch": b, "world_size": ctx.world_size,
        "first_loss": first_loss, "last_loss": last_loss, "seconds": round(elapsed, 2),
        "images_per_s": round((step - start_step) * b / max(elapsed, 1e-9), 1), "resumed_from_step": start_step,
        "input_path": job.pipeline.name, "precision": precision,
        "peak_gpu_memory_gb": (round(torch.cuda.max_memory_allocated(ctx.device) / 2**30, 3)
                               if ctx.device.type == "cuda" else None),
        **{f"best_{k}": v for k, v in best.items()}, **job.extra,
    }
    # DDP keeps replicas identical; check it once, cheaply, at the end.
    digests = dist.gather_objects(ctx, weights_digest(model))
    summary["weights_identical_on_all_ranks"] = len(set(digests)) == 1
    if not summary["weights_identical_on_all_ranks"] and ctx.is_main:
        job.log(f"warning: the ranks' final weights differ ({len(set(digests))} distinct digests)")
    job.folder.finish(summary)
    if ctx.is_main:
        job.log(f"done: {_count(step, 'step')} in {_clock(elapsed)} ({summary['images_per_s']:,.0f} img/s), loss "
                f"{_fmt(first_loss)} -> {_fmt(last_loss)}"
                + (f", peak GPU memory {summary['peak_gpu_memory_gb']:.2f} GB" if summary["peak_gpu_memory_gb"] else "")
                + "".join(f", best {k} {v:.4f}" for k, v in best.items()) + f"; {job.folder.path}")
    return summary


def weights_digest(model: nn.Module) -> str:
    """sha256 over the model's parameters and buffers (bytes, in order)."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _count(number: int, noun: str) -> str:
    """``1 step``, ``2 steps``."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _duration(seconds: float) -> str:
    """``H:MM:SS``, with days and years spelled out when it comes to that."""
    days = seconds / 86400
    if days >= 365:
        return f"{days / 365:,.0f} years"
    if days >= 2:
        return f"{days:,.0f} days"
    return _clock(seconds)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
