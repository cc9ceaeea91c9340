"""Plain-Python front of the kernels: from an IFS and its random inputs to an
image. Sampling stays in NumPy; the kernels only compute."""

from __future__ import annotations

import numpy as np

from . import kernels, seeds

MASK_MODES = ("random", "fill")
CHAOS_STREAMS = ("seeded", "legacy")  # from --seed, or the released code's numpy.random.seed(100)
MASK_CODE_RANGE = (1, 512)  # uniform integers in [1, 511]: never an all-zero patch


def legacy_chaos_stream(iterations: int) -> np.ndarray:
    """The released code's stream: ``numpy.random.seed(100); numpy.random.random(T)``,
    reproduced without touching the global generator. float64 (T,)."""
    return np.random.RandomState(100).random_sample(iterations)


def chaos_uniforms(stream: str, seed: int, iterations: int) -> np.ndarray:
    """The uniforms that choose the maps, shared by every image of a data set:
    ``seeded`` from the seed's CHAOS stream, ``legacy`` the released code's.
    float64 (T,)."""
    if stream == "legacy":
        return legacy_chaos_stream(iterations)
    return seeds.rng(seed, seeds.CHAOS).random(iterations)


def chaos_stream_doc(stream: str) -> str:
    """How :func:`chaos_uniforms` draws, for the manifest."""
    return ("numpy.random.RandomState(100).random_sample(iterations)" if stream == "legacy"
            else seeds.STREAM_DOC["chaos"])


def map_sequence(uniforms: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """The map applied at each chaos-game step: the first j with
    ``r_t <= cumsum(p)_j``. Only the first T-1 uniforms are used (T points,
    the start included). A draw above the last cumulative sum (float rounding)
    gives N, which keeps the point in place. Returns uint8 (T-1,)."""
    cumulative = np.cumsum(probabilities)
    return np.searchsorted(cumulative, uniforms[:-1], side="left").astype(np.uint8)


def draw_mask_codes(rng: np.random.Generator, iterations: int) -> np.ndarray:
    """One 3x3 mask code per point, uniform in [1, 511]. int16 (T,)."""
    return rng.integers(*MASK_CODE_RANGE, size=iterations, dtype=np.int16)


_NO_MASK = np.zeros(0, dtype=np.int16)


def render_ifs(maps: np.ndarray, steps: np.ndarray, size: int, pad: int,
               mask_codes: np.ndarray | None = None) -> np.ndarray:
    """Render one IFS.

    maps: float64 (N, 6); steps: uint8 (T-1,) from :func:`map_sequence`;
    mask_codes: int16 (T,) for the ``random`` mask mode, None for ``fill``.
    Returns uint8 (size, size).
    """
    xs, ys, n_valid, bounds = kernels.chaos_game_tracked(np.ascontiguousarray(maps, dtype=np.float64), steps)
    use_mask = mask_codes is not None
    return kernels.rasterize_bounded(xs, ys, n_valid, bounds, mask_codes if use_mask else _NO_MASK, use_mask,
                                     size, pad)


def fill_rate(image: np.ndarray) -> float:
    """Fraction of pixels > 1 of a uint8 (H, W) image."""
    return float(kernels.fill_rate(image))
