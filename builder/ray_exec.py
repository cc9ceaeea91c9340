"""Shards as Ray tasks: the same plan a local build renders, spread over a
Ray cluster (``fracbuild render --ray``).

One remote task per shard runs exactly what a local worker runs
(:func:`fracbuild.pool.render_shard`): it renders the shard's samples and
writes its tar under a temporary name into the output directory, which must
therefore be the same path on every node (a shared file system), or puts it
straight into an ``s3://`` output (:mod:`fracbuild.remote_out`), then
returns the shard's record. The driver keeps everything that decides the
result: the plan, the resume check of finished shards, the manifest, written
last. A task that fails (its worker killed or out of memory, its node lost,
an I/O error) is retried up to ``max_retries`` times, a user error or a
build failure (deterministic) never; then the build fails with one line
naming the shard, and ``--resume`` finishes it.

Ray is an optional dependency: this module imports it only when a build asks
for it, and the local path never imports this module.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import socket
import tempfile
import time
import uuid
from typing import Any, Callable

from . import pool, shards
from .errors import BuildFailure, UserError

INSTALL_HINT = 'pip install "onepfrac[ray]"'
LOCAL = "local"  # --ray without an address: a Ray started for this command
DEFAULT_MAX_RETRIES = 3
TASKS_PER_CPU = 2  # tasks queued per cluster CPU: enough to keep every CPU busy, few enough to cancel fast
AUTH_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"
WAIT_SECONDS = 1.0  # how long the driver blocks at a time, so Ctrl-C is seen
# A shard another node wrote may take a moment to appear on a network file
# system (attribute caching); one that never appears means --out is not shared.
VISIBLE_SECONDS = 30.0
CONNECT_SECONDS = 10.0  # to reach a cluster's head before giving up


def import_ray():
    """The ``ray`` module, or UserError telling how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError(f"--ray needs Ray, which is not installed ({INSTALL_HINT})") from None
    return ray


def render_one(token: str, spec_box: list, plan: shards.ShardPlan) -> pool.ShardResult:
    """The body of one shard task: the local worker's render and write.

    ``spec_box`` holds the object reference of the build's
    :class:`fracbuild.pool.WorkerSpec` inside a list so that Ray does not
    fetch it for every task: a worker process builds the generator once per
    build (``token``) and reuses it for every later shard of that build.
    """
    global _built_for
    if _built_for != token:
        import ray

        pool._init_worker(ray.get(spec_box[0]))
        _built_for = token
    return pool.render_shard(plan)


_built_for: str | None = None


def _shard_task(body: Callable[..., pool.ShardResult], *args: Any) -> pool.ShardResult | Exception:
    """Run ``body``; a user error or a build failure (deterministic: a class
    that never passes its fill check) is returned, not raised, so that Ray
    retries only what may succeed on another try."""
    try:
        return body(*args)
    except (UserError, BuildFailure) as error:
        return error


class RayExecutor:
    """A connection to a Ray cluster that runs a build's search and shards.

    ``address``: ``"local"`` starts a Ray on this machine with ``workers``
    CPUs for the life of the executor; ``"auto"`` joins the cluster this
    machine belongs to (``ray start``); anything else is the address of a
    cluster's head (``HOST:PORT``). When Ray is already initialised in
    this process, that session is used as it is and left running.
    ``task``: the shard task's body (:func:`render_one`; tests inject faults
    around it).
    """

    def __init__(self, address: str, *, workers: int = 1, max_retries: int = DEFAULT_MAX_RETRIES,
                 task: Callable[..., pool.ShardResult] = render_one):
        if max_retries < 0:
            raise UserError(f"--ray-retries must be >= 0, got {max_retries}")
        if workers < 1:
            raise UserError(f"--workers must be >= 1, got {workers}")
        self.ray = import_ray()
        self.address = address
        self.max_retries = max_retries
        self._driver_workers = workers if address == LOCAL else None  # CPUs the driver's own work may use
        self._owns_session = False
        if not self.ray.is_initialized():
            self._connect(address, workers)
        self._body = task
        self._task = self.ray.remote(_shard_task).options(num_cpus=1, max_retries=max_retries,
                                                          retry_exceptions=True)

    def _connect(self, address: str, workers: int) -> None:
        options: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False,
                                   "configure_logging": True}
        try:
            if address == LOCAL:
                # Ray's notice that its (default) token authentication is on
                # says nothing to a user of a Ray private to this command.
                logging.getLogger(AUTH_NOTICE_LOGGER).setLevel(logging.ERROR)
                # address "local": a new Ray even where `ray start` left a cluster behind
                self.ray.init(address="local", num_cpus=workers, include_dashboard=False, **options)
            else:
                head = _auto_address() if address == "auto" else address
                if head:
                    _check_reachable(head, address)
                self.ray.init(address=address, **options)
        except (ConnectionError, ValueError, RuntimeError) as error:
            where = "the Ray cluster of this machine" if address == "auto" else address
            hint = " (start one with 'ray start --head')" if address == "auto" else ""
            raise UserError(f"--ray {address}: cannot connect to {where}{hint}: "
                            f"{str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
        self._owns_session = True

    def cpus(self) -> int:
        """CPUs the cluster has now (at least 1)."""
        return max(1, int(self.ray.cluster_resources().get("CPU", 1)))

    def close(self) -> None:
        if self._owns_session:
            self.ray.shutdown()
            self._owns_session = False

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- the search -------------------------------------------------------
    def prepare(self, generator_cls: type, params: Any, seed: int, log: Callable[[str], None]) -> dict:
        """The kind's ``prepare``; FractalDB's and OFDB's category search runs
        as Ray tasks (same categories as the local search)."""
        if generator_cls.kind in ("fractaldb", "ofdb"):
            from .generators.fractaldb import search_categories
            from .ray_search import RaySearch

            return search_categories(params, seed, log, search=RaySearch(self.ray, self.cpus()).search)
        return generator_cls.prepare(params, seed, log, workers=self._driver_workers)

    # --- the shards -------------------------------------------------------
    def run_shards(self, spec: pool.WorkerSpec, plans: list[shards.ShardPlan],
                   on_done: Callable[[pool.ShardResult], None],
                   on_start: Callable[[], None] = lambda: None) -> None:
        """Render every plan as a Ray task, calling ``on_start`` once they are
        submitted and ``on_done`` in this process as each shard lands (in
        completion order, like :func:`fracbuild.pool.run_shards`)."""
        ray = self.ray
        shared = spec.remote is None  # else each task puts its shard into object storage itself
        if shared:  # workers may start in another directory (or on another node)
            spec = dataclasses.replace(spec, out_dir=os.path.abspath(spec.out_dir))
        spec_box = [ray.put(spec)]
        token = uuid.uuid4().hex
        waiting = collections.deque(plans)
        running: dict[Any, shards.ShardPlan] = {}
        limit = TASKS_PER_CPU * self.cpus()

        def submit() -> None:
            while waiting and len(running) < limit:
                plan = waiting.popleft()
                running[self._task.remote(self._body, token, spec_box, plan)] = plan

        submit()
        on_start()
        try:
            while running:
                ready, _ = ray.wait(list(running), num_returns=1, timeout=WAIT_SECONDS)
                for ref in ready:
                    plan = running.pop(ref)
                    result = self._result(ref, spec, plan)
                    if shared:
                        _wait_until_visible(spec.out_dir, result)
                    on_done(result)
                submit()
        except BaseException:
            for ref in running:
                ray.cancel(ref)
            raise

    def _result(self, ref: Any, spec: pool.WorkerSpec, plan: shards.ShardPlan) -> pool.ShardResult:
        """The task's result; its failure, after Ray's retries, as the error a
        local build would raise, or one line naming the shard."""
        ray = self.ray
        file = shards.shard_name(spec.prefix, plan.index)
        try:
            result = ray.get(ref)
        except ray.exceptions.RayTaskError as error:
            cause = error.cause
            if isinstance(cause, OSError):
                raise cause from None  # the message a local build gives ("cannot write shards to ...")
            reason = f"{type(cause).__name__}: {cause}" if cause is not None else str(error).splitlines()[0]
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.ObjectLostError, ray.exceptions.OutOfMemoryError,
                ray.exceptions.TaskCancelledError) as error:
            reason = type(error).__name__
        else:
            if isinstance(result, Exception):
                raise result
            return result
        raise BuildFailure(f"shard {file} failed after {self.max_retries + 1} tries ({reason}); "
                           "run again with --resume to finish the build")


def _wait_until_visible(out_dir: str, result: pool.ShardResult) -> None:
    """Return once the shard a task wrote is in ``out_dir`` as seen from the
    driver, with the size the task reported; BuildFailure if it never is
    (the task ran on a node that does not share ``out_dir``)."""
    path = os.path.join(out_dir, result.file)
    deadline = time.monotonic() + VISIBLE_SECONDS
    while True:
        try:
            if os.path.getsize(path) == result.bytes:
                return
        except OSError:
            pass
        if time.monotonic() >= deadline:
            raise BuildFailure(f"shard {result.file} was written by a Ray worker but is not in {out_dir} on this "
                               "machine: --out must be a file system every node shares")
        time.sleep(0.5)


def _auto_address() -> str | None:
    """The head ``--ray auto`` will look for: $RAY_ADDRESS, else the note the
    last ``ray start --head`` on this machine left (None: neither)."""
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    try:
        with open(os.path.join(tempfile.gettempdir(), "ray", "ray_current_cluster"), encoding="utf-8") as note:
            return note.read().strip() or None
    except OSError:
        return None


def _check_reachable(head: str, given: str, seconds: float = CONNECT_SECONDS) -> None:
    """UserError at once when nothing listens at ``head`` (HOST:PORT), which
    ``--ray given`` names: Ray itself would retry for minutes, printing a
    warning every few seconds."""
    host, _, port = head.split("://")[-1].rpartition(":")  # ray://HOST:PORT (Ray Client) too
    if not host or not port.isdigit():
        raise UserError(f"--ray {given}: expected auto or HOST:PORT of a Ray cluster's head, got {head!r}")
    try:
        socket.create_connection((host, int(port)), timeout=seconds).close()
    except OSError as error:
        raise UserError(f"--ray {given}: no Ray cluster answers at {head} "
                        f"({error.strerror or error})") from None
