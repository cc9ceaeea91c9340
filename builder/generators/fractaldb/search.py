"""FractalDB's category search and weight table (Kataoka et al., ACCV 2020).

A candidate category is an IFS of N ~ U{2..7} maps whose six parameters are
all drawn from U(-1, 1), with no contractivity check, and probabilities
``p_j ~ |a d - b c|``. Its chaos game (start (0, 0), diverging orbits cut by the
released rule of :mod:`fracbuild.kernels`)
is drawn one pixel per point (value 127) and the candidate becomes a category
when at least ``threshold`` of the pixels are set. Categories are the first
accepted candidates in candidate order, so the result does not depend on how
many threads evaluate them.

Two candidate streams:

* ``seeded``: candidate k draws N, the maps and its chaos-game uniforms from
  its own stream ``(SEARCH, k)``; candidates are independent.
* ``legacy``: the released script's one ``numpy.random.seed(seed)`` stream:
  per candidate ``randint(2, 8)``, ``uniform(-1, 1, 6)`` per map, then
  ``random(iterations)`` for the chaos game (``--seed 1`` is the released run).

The draws never depend on the fill checks, so candidates are evaluated in
batches by a thread pool (the kernels release the GIL): seeded candidates
are drawn in the threads, legacy ones in order in this thread, the next
batch while the pool works on the current one.
"""

from __future__ import annotations

import os
import time
from decimal import Decimal
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator

import numba
import numpy as np

from ... import ifs, kernels, render, seeds

SEARCH_STREAMS = ("seeded", "legacy")
MIN_MAPS, MAX_MAPS = 2, 7
POINT_VALUE = 127
BATCH_PER_THREAD = 16


# --- the weight table -------------------------------------------------------
PARAMETER_NAMES = ("a", "b", "c", "d", "e", "f")
IDENTITY = "identity"
WEIGHT_ROWS = 25


def weight_rows(step: float) -> list[tuple[str, float]]:
    """The 25 weight rows as (parameter, factor), in the released
    ``weights_<k>.csv`` order: for each parameter a..f the factors
    ``1 - 2k, 1 - k, 1 + k, 1 + 2k``, with the identity row ("identity",
    1.0) between a's ``1 - k`` and ``1 + k`` (row 2). The factors are
    computed in decimal from ``step`` as written, so k = 0.4 gives 0.2, not
    0.19999999999999996, as the released table says."""
    k = Decimal(repr(float(step)))
    one = Decimal(1)
    rows: list[tuple[str, float]] = []
    for name in PARAMETER_NAMES:
        rows += [(name, float(one - 2 * k)), (name, float(one - k))]
        if name == "a":
            rows.append((IDENTITY, 1.0))
        rows += [(name, float(one + k)), (name, float(one + 2 * k))]
    return rows


def weight_table(step: float) -> np.ndarray:
    """The weight rows of :func:`weight_rows` as multipliers of every map's
    (a, b, c, d, e, f): float64 (25, 6)."""
    table = np.ones((WEIGHT_ROWS, 6), dtype=np.float64)
    for row, (name, factor) in enumerate(weight_rows(step)):
        if name != IDENTITY:
            table[row, PARAMETER_NAMES.index(name)] = factor
    return table


def describe_weight_rows(step: float) -> list[str]:
    """What each weight row does, for the manifest: "a x 0.2", ..., "identity"."""
    return [name if name == IDENTITY else f"{name} x {factor!r}" for name, factor in weight_rows(step)]


# --- one pixel per point ----------------------------------------------------
@numba.njit(cache=True, nogil=True, inline="always")
def _bounds(v, n):
    """(min, max) of the first n values of v (+-inf included)."""
    lo = v[0]
    hi = v[0]
    for t in range(n):
        lo = min(lo, v[t])
        hi = max(hi, v[t])
    return lo, hi


@numba.njit(cache=True, nogil=True)
def _set_pixels(xs, ys, n_valid, size, pad, image, value):
    """Set the pixel of each of the first ``n_valid`` points to ``value``
    (mapped as :func:`rasterize_points` says); returns how many pixels
    went from 0 to set."""
    if n_valid == 0:
        return 0
    x_lo, x_hi = _bounds(xs, n_valid)
    y_lo, y_hi = _bounds(ys, n_valid)
    x_shift, x_extent, span = kernels.axis_transform(x_lo, x_hi, size, pad)
    y_shift, y_extent, _ = kernels.axis_transform(y_lo, y_hi, size, pad)
    count = 0
    for t in range(n_valid):
        col = kernels.pixel(xs[t], x_shift, x_extent, span, pad)
        row = kernels.pixel(ys[t], y_shift, y_extent, span, pad)
        if 0 <= row < size and 0 <= col < size and image[row, col] == 0:
            image[row, col] = value
            count += 1
    return count


@numba.njit(cache=True, nogil=True)
def rasterize_points(xs, ys, n_valid, size, pad, value):
    """Draw each of the first ``n_valid`` points as one pixel of ``value``.

    xs, ys: float64 (T,). A point lands on column ``int((x + shift) / extent *
    (size - 2 pad) + pad)`` (the mapping of :func:`fracbuild.kernels.rasterize`,
    per axis: a non-finite result gives 0) and row likewise from y, row 0 at
    the top, with no flip (the released search image is not flipped; the
    fill does not depend on it). Returns uint8 (size, size).
    """
    image = np.zeros((size, size), dtype=np.uint8)
    _set_pixels(xs, ys, n_valid, size, pad, image, value)
    return image


@numba.njit(cache=True, nogil=True)
def count_nonzero(image):
    """Pixels of uint8 ``image`` that are not 0."""
    count = 0
    for v in image.ravel():
        if v != 0:
            count += 1
    return count


def point_image(maps: np.ndarray, uniforms: np.ndarray, size: int, pad: int) -> np.ndarray:
    """The search image of one IFS: maps float64 (N, 6), uniforms float64 (T,)
    choosing the maps (T points, the start included). uint8 (size, size)."""
    steps = render.map_sequence(uniforms, ifs.map_probabilities(maps))
    xs, ys = kernels.chaos_game(np.ascontiguousarray(maps, dtype=np.float64), steps)
    return rasterize_points(xs, ys, xs.shape[0], size, pad, POINT_VALUE)


def point_fill(maps: np.ndarray, uniforms: np.ndarray, size: int, pad: int) -> float:
    """Share of the search image's pixels that are set (the reference path:
    :func:`point_image`; the search uses the fused :func:`fused_fill`)."""
    return count_nonzero(point_image(maps, uniforms, size, pad)) / float(size * size)


@numba.njit(cache=True, nogil=True)
def fused_fill(maps, cumulative, uniforms, size, pad):
    """What :func:`point_fill` computes, in one kernel and about half the
    time. The map at step t is the number of ``cumulative[j] < r_t`` (the
    first j with ``r_t <= cumulative[j]``, counted without branches); N, past
    the last map, keeps the point (an identity row). The orbit stops at its
    first NaN in x, after which nothing changes what the released cut keeps.
    maps float64 (N, 6); cumulative float64 (N,); uniforms float64 (T,).
    Returns the number of set pixels of the one-pixel image."""
    n_points = uniforms.shape[0]
    n_maps = maps.shape[0]
    table = np.zeros((n_maps + 1, 6))
    table[:n_maps] = maps
    table[n_maps, 0] = 1.0
    table[n_maps, 3] = 1.0
    xs = np.empty(n_points, dtype=np.float64)
    ys = np.empty(n_points, dtype=np.float64)
    x = 0.0
    y = 0.0
    xs[0] = x
    ys[0] = y
    saw_nan = False
    for t in range(n_points - 1):
        r = uniforms[t]
        k = 0
        for j in range(n_maps):
            k += r > cumulative[j]
        nx = table[k, 0] * x + table[k, 1] * y + table[k, 4]
        ny = table[k, 2] * x + table[k, 3] * y + table[k, 5]
        x = nx
        y = ny
        xs[t + 1] = x
        ys[t + 1] = y
        if np.isnan(x) or np.isnan(y):
            saw_nan = True
            if np.isnan(x):
                xs[t + 2:] = np.nan
                ys[t + 2:] = np.nan
                break
    if saw_nan:
        xs, ys = kernels.released_cut(xs, ys)
    image = np.zeros((size, size), dtype=np.uint8)
    return _set_pixels(xs, ys, xs.shape[0], size, pad, image, 1)


# --- candidates -------------------------------------------------------------
def seeded_candidate(seed: int, index: int, iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidate ``index`` of the seeded stream: (maps (N, 6), uniforms (T,))
    from ``(SEARCH, index)``: N = integers(2, 8), uniform(-1, 1, (N, 6)),
    random(T)."""
    rng = seeds.rng(seed, seeds.SEARCH, index)
    n_maps = int(rng.integers(MIN_MAPS, MAX_MAPS + 1))
    maps = rng.uniform(-1.0, 1.0, size=(n_maps, 6))
    return maps, rng.random(iterations)


def legacy_candidates(seed: int, iterations: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The released script's candidates, in order, from one
    ``RandomState(seed)``: randint(2, 8), uniform(-1, 1, 6) per map, random(T)."""
    legacy = np.random.RandomState(seed)
    while True:
        n_maps = int(legacy.randint(MIN_MAPS, MAX_MAPS + 1))
        maps = np.array([legacy.uniform(-1.0, 1.0, 6) for _ in range(n_maps)], dtype=np.float64)
        yield maps, legacy.random_sample(iterations)


def candidate_fill(maps: np.ndarray, uniforms: np.ndarray, size: int, pad: int) -> float:
    """The search image's fill (:func:`point_fill`, computed by :func:`fused_fill`)."""
    cumulative = np.cumsum(ifs.map_probabilities(maps))
    return fused_fill(np.ascontiguousarray(maps), cumulative, uniforms, size, pad) / float(size * size)


def search_threads() -> int:
    """Threads for the search: the CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def search(num_categories: int, *, stream: str, seed: int, iterations: int, size: int, pad: int,
           threshold: float, max_candidates: int, log: Callable[[str], None],
           threads: int | None = None) -> dict:
    """Find ``num_categories`` categories: the first candidates, in candidate
    order, whose search image fill is >= ``threshold``.

    Returns {"categories": [{"maps", "probabilities", "fill_rate", "candidate"}],
    "candidates_tried", "categories_per_n_maps", "acceptance_rate",
    "search_seconds"}. Raises RuntimeError when ``max_candidates`` run out.
    """
    started = time.perf_counter()
    threads = threads or search_threads()
    batch = BATCH_PER_THREAD * threads
    legacy = legacy_candidates(seed, iterations) if stream == "legacy" else None

    def evaluate(index: int, candidate: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, float]:
        maps, uniforms = candidate if candidate is not None else seeded_candidate(seed, index, iterations)
        return maps, candidate_fill(maps, uniforms, size, pad)

    def draw(indices: range) -> list:
        return [next(legacy) for _ in indices] if legacy is not None else [None] * len(indices)

    found: list[dict] = []
    tried = 0
    next_report = started + 10.0
    indices = range(0, min(batch, max_candidates))
    drawn = draw(indices)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        while len(found) < num_categories:
            if not indices:
                raise RuntimeError(f"only {len(found)} of {num_categories} categories in {max_candidates} "
                                   f"candidates (threshold {threshold})")
            results = pool.map(evaluate, indices, drawn)  # submitted now, collected below
            following = range(indices.stop, min(indices.stop + batch, max_candidates))
            drawn = draw(following)
            for index, (maps, fill) in zip(indices, results):
                if fill >= threshold and len(found) < num_categories:
                    found.append({"maps": maps.tolist(), "probabilities": ifs.map_probabilities(maps).tolist(),
                                  "fill_rate": fill, "candidate": index})
            tried = indices.stop
            indices = following
            if time.perf_counter() > next_report:
                next_report = time.perf_counter() + 10.0
                log(f"search: {len(found)}/{num_categories} categories after {tried} candidates")
    tried = found[-1]["candidate"] + 1  # later candidates of the last batch were not needed
    per_n = {str(n): sum(len(c["maps"]) == n for c in found) for n in range(MIN_MAPS, MAX_MAPS + 1)}
    seconds = time.perf_counter() - started
    log(f"search: {num_categories} categories from {tried} candidates in {seconds:.1f} s "
        f"(per map count 2..7: {', '.join(map(str, per_n.values()))})")
    return {"categories": found, "candidates_tried": tried, "categories_per_n_maps": per_n,
            "acceptance_rate": num_categories / tried, "search_seconds": seconds}
