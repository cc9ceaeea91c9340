"""The run folder: ``config.yaml`` (resolved configuration), ``metrics.jsonl``
(one JSON record per log point, epoch summary and evaluation), TensorBoard
events under ``tb/``, periodic checkpoints ``ckpt-<step>.pt``, and, only
when the run completes, ``final.pt`` then ``summary.json``. ``summary.json``
is the finished marker: a folder without it is an unfinished run that
``--resume auto`` continues.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from typing import Any

from fracbuild.manifest import write_json_atomic

from . import checkpoint as ckpt
from .errors import UserError

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
TENSORBOARD = "tb"


@dataclass(frozen=True)
class Start:
    """How a run begins: fresh, from a checkpoint, or not at all (finished)."""

    checkpoint: str | None = None
    finished: bool = False


def decide(out: str, resume: str | None) -> Start:
    """Read-only look at ``out`` (before anything is created).

    resume None: the folder must not hold a run already (finished, with
    checkpoints, or the files of a run killed before its first checkpoint). "auto": continue from the newest checkpoint, or start
    fresh when there is none. A path: that checkpoint file.
    """
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--out {out} exists and is not a directory")
    finished = os.path.exists(os.path.join(out, SUMMARY))
    latest = ckpt.latest(out)
    if resume is None:
        if finished:
            raise UserError(f"{out} holds a finished run; choose another --out")
        if latest:
            raise UserError(f"{out} holds an unfinished run ({os.path.basename(latest)}); pass --resume auto to "
                            "continue it, or choose another --out")
        if any(os.path.exists(os.path.join(out, name)) for name in (CONFIG, METRICS, TENSORBOARD)):
            # A run killed before its first checkpoint: starting over silently
            # would mix two runs' metrics and TensorBoard events.
            raise UserError(f"{out} holds an unfinished run with no checkpoint; pass --resume auto to start it "
                            "over there, or choose another --out")
        return Start()
    if resume == "auto":
        if finished:
            return Start(finished=True)
        return Start(checkpoint=latest)
    if not os.path.isfile(resume):
        raise UserError(f"--resume {resume}: no such checkpoint file")
    return Start(checkpoint=resume)


class RunFolder:
    """Writes the run's files; on ranks other than 0 every method is a no-op."""

    def __init__(self, path: str, is_main: bool = True):
        self.path = path
        self.is_main = is_main
        self._metrics = None
        self._writer = None

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def open(self, config_yaml: str, start_step: int) -> None:
        """Create the folder, write config.yaml, open metrics (dropping records
        past ``start_step`` left by a run that died after its last checkpoint)."""
        if not self.is_main:
            return
        os.makedirs(self.path, exist_ok=True)
        temporary = self.file(CONFIG + ".partial")
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(config_yaml)
        os.replace(temporary, self.file(CONFIG))
        self._truncate_metrics(start_step)
        if start_step == 0:  # starting over in a folder a killed run left: none of its events stay
            shutil.rmtree(self.file(TENSORBOARD), ignore_errors=True)
        self._metrics = open(self.file(METRICS), "a", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(self.file(TENSORBOARD), purge_step=start_step or None)
        except ImportError:
            print("warning: tensorboard is not installed; no TensorBoard events", file=sys.stderr)

    def _truncate_metrics(self, start_step: int) -> None:
        path = self.file(METRICS)
        if not os.path.exists(path):
            return
        kept = []
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    if json.loads(line).get("step", 0) <= start_step:
                        kept.append(line)
                except ValueError:
                    continue
        with open(path + ".partial", "w", encoding="utf-8") as handle:
            handle.writelines(kept)
        os.replace(path + ".partial", path)

    def record(self, record: dict[str, Any], scalars: dict[str, float] | None = None) -> None:
        if not self.is_main or self._metrics is None:
            return
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()
        if self._writer is not None and scalars:
            for name, value in scalars.items():
                self._writer.add_scalar(name, value, record["step"])

    def finish(self, summary: dict[str, Any]) -> None:
        if not self.is_main:
            return
        self.close()
        write_json_atomic(self.file(SUMMARY), summary)

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def remove_if_unused(path: str, existed: bool) -> None:
    """Remove a run folder this process created if it holds no checkpoint
    (a run that failed before its first checkpoint leaves nothing behind)."""
    if existed or not os.path.isdir(path) or ckpt.latest(path):
        return
    shutil.rmtree(path, ignore_errors=True)


def default_out(command: str, model_name: str, data_location: str | None, seed: int, extra: str = "") -> str:
    """``runs/<command>-<model>-<data>[-extra]-s<seed>``: a fixed name, so that
    re-running the same command with ``--resume auto`` finds the run."""
    from .model import ALIASES

    short = next((alias for alias, name in ALIASES.items() if name == model_name), model_name) or "model"
    trimmed = (data_location or "data").rstrip("/")
    data_name = os.path.basename(trimmed) or "data"
    if data_name in ("train", "training") and os.path.basename(os.path.dirname(trimmed)):
        data_name = os.path.basename(os.path.dirname(trimmed))  # DIR/train -> DIR's name
    parts = [command, short, data_name] + ([extra] if extra else []) + [f"s{seed}"]
    return os.path.join("runs", "-".join(p.replace(os.sep, "_") for p in parts))
