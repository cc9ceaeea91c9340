"""Process-group setup under torchrun (single- or multi-node) and the few
collectives the trainer needs. Without torchrun everything is a no-op on a
world of one."""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist

from .errors import UserError


@dataclass(frozen=True)
class Context:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(requested: str) -> str:
    """'auto' | 'cpu' | 'cuda' -> 'cpu' or 'cuda'; UserError for cuda without one."""
    if requested not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device must be auto, cpu or cuda, got {requested!r}")
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is available on this machine (use --device cpu or auto)")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def world_size_from_env() -> int:
    """The number of ranks torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(requested_device: str = "auto", timeout_min: float = 30.0) -> Context:
    """Read torchrun's environment, pick the device and, for a world larger
    than one, join the process group (NCCL on GPU, gloo on CPU)."""
    kind = resolve_device(requested_device)
    world = world_size_from_env()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if kind == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"local rank {local_rank} but only {torch.cuda.device_count()} GPU(s) on this node "
                            "(--nproc_per_node too large?)")
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if kind == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"timeout": datetime.timedelta(minutes=timeout_min)}
        if kind == "cuda":
            kwargs["device_id"] = device
        dist.init_process_group(backend=backend, **kwargs)
    return Context(rank=rank, world_size=world, local_rank=local_rank, local_world_size=local_world, device=device)


@contextlib.contextmanager
def shared_group(timeout_min: float = 30.0) -> Iterator[int]:
    """Under torchrun, one process group around many runs (``fractrain
    experiment``): each run's setup finds it joined and leaves it in place.
    Re-joining for every run would reuse the rendezvous store's keys of the
    group before. Gloo for CPU tensors and, when there is a GPU, NCCL for
    CUDA ones, so each run may pick its --device. Yields this rank (0
    without torchrun, where it does nothing)."""
    if world_size_from_env() <= 1 or dist.is_initialized():
        yield int(os.environ.get("RANK", "0"))
        return
    backend = "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % max(torch.cuda.device_count(), 1))
        backend = "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=timeout_min))
    try:
        yield dist.get_rank()
    finally:
        dist.destroy_process_group()


def shared_barrier() -> None:
    """Every rank waits here (inside shared_group; nothing without torchrun)."""
    if dist.is_initialized():
        # A CPU tensor goes to gloo whatever the runs' devices are: no GPU needs choosing for it.
        dist.all_reduce(torch.zeros(1))


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        dist.barrier()


def gather_objects(ctx: Context, value: Any) -> list[Any]:
    """Every rank's ``value`` (a list on every rank)."""
    if not ctx.distributed:
        return [value]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, value)
    return out


def all_reduce_sum(ctx: Context, tensor: torch.Tensor) -> torch.Tensor:
    if ctx.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def node_group(ctx: Context):
    """This node's ranks as a ``data.NodeGroup`` (one shared copy of the data
    set), or None when this rank is alone on its node. torchrun numbers the
    ranks of a node consecutively, so the node's first rank is rank - local_rank."""
    from .data import NodeGroup

    if not ctx.distributed or ctx.local_world_size <= 1:
        return None
    first = ctx.rank - ctx.local_rank

    def share(value: Any) -> Any:
        return gather_objects(ctx, value)[first]

    def any_failed(flag: bool) -> bool:
        tensor = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())

    return NodeGroup(index=ctx.local_rank, size=ctx.local_world_size, share=share, any_failed=any_failed)

