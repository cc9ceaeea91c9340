"""FractalDB's and OFDB's category search with candidate blocks as Ray tasks.

The categories are the first accepted candidates in candidate order, as in
:func:`fracbuild.generators.fractaldb.search.search`: blocks of consecutive candidates
are evaluated anywhere on the cluster, and the driver reads their fills in
block order, so the result does not depend on which block finishes first.
A block evaluates each candidate with the local search's own functions
(:func:`~fracbuild.generators.fractaldb.search.seeded_candidate` and
:func:`~fracbuild.generators.fractaldb.search.candidate_fill`). Seeded candidates are
drawn in the task from their own streams; legacy ones come from one
sequential ``RandomState``, so the driver draws them in order and ships the
draws with the block.
"""

from __future__ import annotations

import collections
import time
from typing import Any, Callable

import numpy as np

from . import ifs
from .generators.fractaldb import search as fractaldb_search
from .errors import BuildFailure

BLOCK = 64  # candidates per task: ~0.3 s of one core at 100,000 points, against under 1 ms of Ray per task
TASKS_PER_CPU = 2


def evaluate_block(seed: int, first: int, count: int, iterations: int, size: int, pad: int,
                   drawn: list | None) -> list[tuple[np.ndarray, float]]:
    """(maps float64 (N, 6), fill) of candidates ``first .. first + count - 1``.
    ``drawn``: the legacy stream's (maps, uniforms) of these candidates, or
    None to draw seeded candidates here."""
    results = []
    for offset in range(count):
        if drawn is not None:
            maps, uniforms = drawn[offset]
        else:
            maps, uniforms = fractaldb_search.seeded_candidate(seed, first + offset, iterations)
        results.append((maps, fractaldb_search.candidate_fill(maps, uniforms, size, pad)))
    return results


class RaySearch:
    """:meth:`search` is a drop-in for :func:`fracbuild.generators.fractaldb.search.search`.
    A block task that fails is run again up to ``max_retries`` times;
    ``evaluate`` is its body (:func:`evaluate_block`; tests inject faults)."""

    def __init__(self, ray: Any, cpus: int, block: int = BLOCK, max_retries: int = 3,
                 evaluate: Callable[..., list] = evaluate_block):
        self.ray = ray
        self.block = block
        self.in_flight = TASKS_PER_CPU * max(1, cpus)
        self._task = ray.remote(evaluate).options(num_cpus=1, max_retries=max_retries, retry_exceptions=True)

    def _fills(self, ref: Any, first: int, count: int) -> list[tuple[np.ndarray, float]]:
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayError as error:  # after the task's retries
            reason = type(getattr(error, "cause", None) or error).__name__
            raise BuildFailure(f"search: candidates {first}..{first + count - 1} failed on Ray ({reason}); "
                               "run the command again") from None

    def search(self, num_categories: int, *, stream: str, seed: int, iterations: int, size: int, pad: int,
               threshold: float, max_candidates: int, log: Callable[[str], None],
               threads: int | None = None) -> dict:
        """Same arguments and result as the local search (``threads`` is the
        local search's and unused: the cluster's CPUs decide)."""
        started = time.perf_counter()
        legacy = fractaldb_search.legacy_candidates(seed, iterations) if stream == "legacy" else None
        found: list[dict] = []
        pending: collections.deque = collections.deque()  # (first, count, ref), in candidate order
        next_index = 0
        next_report = started + 10.0
        try:
            while len(found) < num_categories:
                while len(pending) < self.in_flight and next_index < max_candidates:
                    count = min(self.block, max_candidates - next_index)
                    drawn = [next(legacy) for _ in range(count)] if legacy is not None else None
                    pending.append((next_index, count,
                                    self._task.remote(seed, next_index, count, iterations, size, pad, drawn)))
                    next_index += count
                if not pending:
                    raise RuntimeError(f"only {len(found)} of {num_categories} categories in {max_candidates} "
                                       f"candidates (threshold {threshold})")
                first, count, ref = pending.popleft()
                for offset, (maps, fill) in enumerate(self._fills(ref, first, count)):
                    if fill >= threshold and len(found) < num_categories:
                        found.append({"maps": maps.tolist(),
                                      "probabilities": ifs.map_probabilities(maps).tolist(),
                                      "fill_rate": fill, "candidate": first + offset})
                if time.perf_counter() > next_report:
                    next_report = time.perf_counter() + 10.0
                    log(f"search: {len(found)}/{num_categories} categories after {first + self.block} candidates")
        finally:
            for _, _, ref in pending:
                self.ray.cancel(ref)
        tried = found[-1]["candidate"] + 1
        per_n = {str(n): sum(len(c["maps"]) == n for c in found)
                 for n in range(fractaldb_search.MIN_MAPS, fractaldb_search.MAX_MAPS + 1)}
        seconds = time.perf_counter() - started
        log(f"search: {num_categories} categories from {tried} candidates in {seconds:.1f} s on Ray "
            f"(per map count 2..7: {', '.join(map(str, per_n.values()))})")
        return {"categories": found, "candidates_tried": tried, "categories_per_n_maps": per_n,
                "acceptance_rate": num_categories / tried, "search_seconds": seconds}
