"""Checkpoints: what they hold, atomic writes, finding the latest, and the
checks that a checkpoint fits the run that loads it.

A checkpoint is a dict::

    model            unwrapped state_dict (never the DDP / torch.compile wrapper)
    optimizer, scheduler, scaler   their state_dicts
    step             optimizer steps done (the next step to run)
    epoch            epochs done (fractional)
    rng              per rank: {"torch", "cuda", "numpy", "python"} states
    config           the resolved configuration (config.to_dict)
    manifest_sha256  sha256 of the pre-training manifest's bytes (None downstream)
    model_name, num_classes, world_size, format

Everything in it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import random
import re
from typing import Any

import numpy as np
import torch

from .errors import UserError

FORMAT = "fractrain-checkpoint-1"
FINAL = "final.pt"
PERIODIC = re.compile(r"^ckpt-(\d{9})\.pt$")


def periodic_name(step: int) -> str:
    return f"ckpt-{step:09d}.pt"


def save(path: str, payload: dict[str, Any]) -> None:
    """Write to ``path.partial`` then rename: a crash never leaves half a file."""
    temporary = path + ".partial"
    try:
        torch.save({"format": FORMAT, **payload}, temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def load(path: str) -> dict[str, Any]:
    """A checkpoint, on the CPU; UserError when unreadable or not ours."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint {path} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"checkpoint {path} is a directory (pass the .pt file, or --resume auto with --out)") from None
    except Exception as error:  # noqa: BLE001 - torch raises many types for a bad file
        detail = (str(error).splitlines() or [type(error).__name__])[0][:200]
        raise UserError(f"{path} is not a fractrain checkpoint (torch cannot load it: {detail})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{path} is not a fractrain checkpoint")
    return payload


def periodic(run_dir: str) -> list[tuple[int, str]]:
    """(step, path) of the periodic checkpoints in ``run_dir``, oldest first."""
    if not os.path.isdir(run_dir):
        return []
    found = [(int(m.group(1)), os.path.join(run_dir, name))
             for name in os.listdir(run_dir) if (m := PERIODIC.match(name))]
    return sorted(found)


def latest(run_dir: str) -> str | None:
    """The newest checkpoint of an unfinished run (final.pt if finished)."""
    final = os.path.join(run_dir, FINAL)
    if os.path.exists(final):
        return final
    found = periodic(run_dir)
    return found[-1][1] if found else None


def prune(run_dir: str, keep: int) -> None:
    """Remove all but the ``keep`` newest periodic checkpoints."""
    found = periodic(run_dir)
    for _, path in found[: max(0, len(found) - max(keep, 1))]:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


def check_fits(payload: dict[str, Any], path: str, model_name: str, num_classes: int | None,
               manifest_sha256: str | None = None) -> None:
    """UserError when the checkpoint is for another model, class count or data set."""
    if payload.get("model_name") != model_name:
        raise UserError(f"checkpoint {path} is for model {payload.get('model_name')}, not {model_name}")
    if num_classes is not None and payload.get("num_classes") != num_classes:
        raise UserError(f"checkpoint {path} has {payload.get('num_classes')} classes, this data set has {num_classes}")
    if manifest_sha256 is not None and payload.get("manifest_sha256") not in (None, manifest_sha256):
        raise UserError(f"checkpoint {path} was trained on another data set (manifest sha256 "
                        f"{str(payload.get('manifest_sha256'))[:12]}..., this one {manifest_sha256[:12]}...)")


# --- random number generator states ---------------------------------------------
def rng_state() -> dict[str, Any]:
    """This process's generator states, as tensors and plain Python values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        # This rank's own device only: get_rng_state_all() would create a
        # context on every visible GPU from every rank.
        "cuda": [torch.cuda.get_rng_state()] if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": _listify(random.getstate()),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"][0])  # the current device (set by distributed.setup)
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(_tuplify(state["python"]))


def _listify(value: Any) -> Any:
    return [_listify(v) for v in value] if isinstance(value, tuple) else value


def _tuplify(value: Any) -> Any:
    return tuple(_tuplify(v) for v in value) if isinstance(value, list) else value
