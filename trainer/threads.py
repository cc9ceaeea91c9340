"""How many CPU threads a rank uses: torch's intra-op threads and the
DataLoader's worker processes, chosen from the cores this process may run on.

torch starts one intra-op thread per core it sees, and every loader worker is
another busy process: on a 2-core machine the defaults (2 threads + 1
worker) oversubscribe the cores, and the training thread's matrix products
wait on the worker's image transforms and on each other (benchmarks/
cpu_threads_bench.py measures it). On a CPU device the cores of this rank
(``os.sched_getaffinity`` and the cgroup's CPU quota, divided among the
node's ranks) are therefore split between the two: half to loader workers
(at most 8), the rest to torch. On CUDA torch's threads are left alone (the
model runs on the GPU) and only the worker count is chosen, as before.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from .errors import UserError

MAX_WORKERS = 8


def available_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2
    CPU quota when one is set (containers)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as handle:
            quota, period = handle.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


@dataclass(frozen=True)
class ThreadPlan:
    threads: int | None  # torch intra-op threads to set; None: torch's own choice is kept
    workers: int  # DataLoader worker processes
    note: str  # one line for the run log


def plan(device_type: str, local_ranks: int, threads: int | None, workers: int | None,
         cores: int | None = None) -> ThreadPlan:
    """The split for one rank. threads: None = choose (on a CPU device; kept
    as torch's on CUDA or when OMP_NUM_THREADS is set), 0 = torch's own, N =
    N; workers: None = choose, N = N."""
    if threads is not None and threads < 0:
        raise UserError(f"--threads must be >= 0, got {threads}")
    if workers is not None and workers < 0:
        raise UserError(f"--workers must be >= 0, got {workers}")
    cores = cores if cores is not None else available_cores()
    per_rank = max(1, cores // max(1, local_ranks))
    why = f"{cores} core(s) available to this process for {local_ranks} rank(s) on this node"
    if device_type != "cuda":
        chosen_workers = workers if workers is not None else min(MAX_WORKERS, per_rank // 2)
        if threads is None and "OMP_NUM_THREADS" not in os.environ:
            threads = max(1, per_rank - chosen_workers)
            source = "chosen"
        elif threads is None:
            threads, source = 0, "OMP_NUM_THREADS"
        else:
            source = "--threads" if threads else "torch's own, --threads 0"
    else:
        chosen_workers = workers if workers is not None else max(0, min(MAX_WORKERS, per_rank - 1))
        threads, source = threads or 0, "--threads" if threads else "torch's default"
    shown = threads if threads else torch.get_num_threads()
    return ThreadPlan(threads or None, chosen_workers,
                      f"CPU threads: {shown} torch intra-op thread(s) ({source}), {chosen_workers} loader worker(s) "
                      f"({'--workers' if workers is not None else 'chosen'}); {why}")


def apply(thread_plan: ThreadPlan) -> None:
    """Set torch's intra-op threads when the plan names a number."""
    if thread_plan.threads:
        torch.set_num_threads(thread_plan.threads)


def for_run(ctx, run_cfg, log) -> int:
    """Plan, apply and log (main rank) this rank's threads; returns the loader
    workers. ctx: distributed.Context; run_cfg: config.RunConfig."""
    thread_plan = plan(ctx.device.type, ctx.local_world_size, run_cfg.threads, run_cfg.workers)
    apply(thread_plan)
    if ctx.is_main:
        log(thread_plan.note)
    return thread_plan.workers
