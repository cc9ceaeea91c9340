"""Workers: each renders, encodes and writes whole shards.

A process pool holds one generator per worker, built once by the
initializer. A worker that dies breaks the pool, which fails the build
instead of hanging it; a build that dies takes its workers with it.

On Linux the workers are forked: they inherit the imported modules and the
kernels the search already compiled, so a worker starts in milliseconds
instead of the ~2 s a spawned one spends importing and loading numba's
cache (that start-up alone would cost a fifth of a 1,000-class build). The
pool is started before any thread of ours (the progress bar's) exists.
"""

from __future__ import annotations

import concurrent.futures as futures
import ctypes
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from . import encode, shards
from .errors import EXIT_INTERRUPTED, BuildFailure
from .generators import Generator, get_kind


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to rebuild the generator: all plain data."""

    kind: str
    params: Any
    seed: int
    system: dict
    out_dir: str  # where shards are written; unused with ``remote``
    prefix: str
    key_width: int
    # A fracbuild.remote_out.RemoteTarget: each shard goes from a scratch
    # folder of the worker straight to object storage (None: to out_dir).
    remote: Any = None


@dataclass
class ShardResult:
    plan: shards.ShardPlan
    file: str
    bytes: int
    sha256: str
    samples: list[dict]  # per-sample manifest records, in index order


_worker: tuple[WorkerSpec, Generator] | None = None

PR_SET_PDEATHSIG = 1  # linux/prctl.h
WATCHDOG_PERIOD = 1.0  # seconds between a worker's looks at its parent where prctl is missing


def _die_with_parent(parent: int) -> None:
    """Make this worker end when ``parent`` (the build) dies, however it
    dies: an orphaned worker would go on writing shards into the folder a
    ``--resume`` is about to use. Linux: the kernel sends SIGKILL
    (PR_SET_PDEATHSIG); elsewhere a thread watches the parent."""
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if not armed:
        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(WATCHDOG_PERIOD)
            os._exit(1)

        threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def _quiet_exit_on_interrupt(signum: int, frame: Any) -> None:
    # Ctrl-C reaches the whole process group: the build says how to resume;
    # a worker only stops, without a traceback per process.
    os._exit(EXIT_INTERRUPTED)


def _init_worker(spec: WorkerSpec, parent: int | None = None) -> None:
    global _worker
    if parent is not None:
        _die_with_parent(parent)
        signal.signal(signal.SIGINT, _quiet_exit_on_interrupt)
    _worker = (spec, get_kind(spec.kind)(spec.params, spec.seed, spec.system))


def sample_record(index: int, label: int, record: dict) -> dict:
    return {"index": index, "label": label, **record}


def render_shard(plan: shards.ShardPlan) -> ShardResult:
    """Render the samples of ``plan`` and write its tar (in a worker): into
    ``out_dir``, or with ``remote`` to object storage."""
    assert _worker is not None, "worker not initialised"
    spec, generator = _worker
    records: list[dict] = []

    def encoded() -> Iterator[shards.EncodedSample]:
        for index in range(plan.first, plan.first + plan.count):
            sample = generator.render(index)
            record = sample_record(index, sample.label, sample.record)
            records.append(record)
            yield shards.EncodedSample(shards.sample_key(index, spec.key_width),
                                       encode.encode_png(sample.image), sample.label, record)

    file = shards.shard_name(spec.prefix, plan.index)
    if spec.remote is not None:
        with tempfile.TemporaryDirectory(prefix="fracbuild-shard-") as scratch:
            result = _write(os.path.join(scratch, file), encoded(), plan, records)
            spec.remote.put(scratch, result)
        return result
    return _write(os.path.join(spec.out_dir, file), encoded(), plan, records)


def _write(path: str, samples: Iterator[shards.EncodedSample], plan: shards.ShardPlan,
           records: list[dict]) -> ShardResult:
    shards.write_shard(path, samples)
    return ShardResult(plan, os.path.basename(path), os.path.getsize(path), shards.sha256_file(path), records)


def run_shards(spec: WorkerSpec, plans: list[shards.ShardPlan], workers: int,
               on_done: Callable[[ShardResult], None], on_start: Callable[[], None] = lambda: None) -> None:
    """Render every plan, calling ``on_start`` once the workers exist and
    ``on_done`` in this process as each shard lands. ``workers == 1``
    renders in this process (no pool)."""
    if not plans:
        on_start()
        return
    if workers <= 1:
        on_start()
        _init_worker(spec)
        for plan in plans:
            on_done(render_shard(plan))
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    with futures.ProcessPoolExecutor(max_workers=min(workers, len(plans)), mp_context=context,
                                     initializer=_init_worker, initargs=(spec, os.getpid())) as pool:
        pending: dict[futures.Future, shards.ShardPlan] = {}
        try:
            pending.update({pool.submit(render_shard, plan): plan for plan in plans})
            on_start()
            for future in futures.as_completed(pending):
                on_done(future.result())
        except futures.process.BrokenProcessPool:  # from a result or from a submission
            # The pool has failed every pending future itself: nothing to cancel.
            raise BuildFailure("a worker process died (out of memory or killed); "
                               "run again with --resume to finish the build") from None
        except KeyboardInterrupt:
            # Stop the workers now, not after the whole queue: each exits
            # quietly on SIGINT, and the pool, broken, lets the `with` end.
            # (Cancelling futures here races the pool marking them broken.)
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                if process.is_alive():
                    os.kill(process.pid, signal.SIGINT)
            raise
        except BaseException:
            for future in pending:
                future.cancel()
            raise
