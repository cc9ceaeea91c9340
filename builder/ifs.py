"""Iterated function systems: sampling by sigma-factor, map probabilities.

An IFS of N affine maps is a float64 array ``maps`` of shape (N, 6) holding
``(a, b, c, d, e, f)`` per map: ``x' = a x + b y + e``, ``y' = c x + d y + f``.
"""

from __future__ import annotations

import numpy as np

PARAMS_PER_MAP = 6


def sample_singular_values(sigma: float, n_maps: int, rng: np.random.Generator) -> np.ndarray:
    """Singular values with ``1 >= s1 >= s2 >= 0`` per map and
    ``sum_j (s_j1 + 2 s_j2) == sigma`` (Anderson & Farrell's sigma-factor).

    Pairs 1..N-1 are drawn with running bounds: ``p`` is the sum still to
    place and ``q`` what must be placed now because the later pairs can hold at
    most 3 each. The last pair takes what remains. Returns float64 (N, 2).
    """
    values = np.empty((n_maps, 2), dtype=np.float64)
    remaining = float(sigma)
    for j in range(n_maps - 1):
        floor = remaining - 3.0 * (n_maps - j - 1)  # later maps hold at most 3 each
        s1 = rng.uniform(max(0.0, floor / 3.0), min(1.0, remaining))
        remaining_after_s1 = remaining - s1
        floor = remaining_after_s1 - 3.0 * (n_maps - j - 1)
        s2 = rng.uniform(max(0.0, floor / 2.0), min(s1, remaining_after_s1 / 2.0))
        values[j] = (s1, s2)
        remaining -= s1 + 2.0 * s2
    s2 = rng.uniform(max(0.0, (remaining - 1.0) / 2.0), remaining / 3.0)
    values[-1] = (remaining - 2.0 * s2, s2)
    return values


def _rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def _sign_flip(rng: np.random.Generator) -> np.ndarray:
    """A random reflection of the basis: diag(+-1, +-1)."""
    return np.diag(rng.choice([-1.0, 1.0], size=2))


def sample_ifs(sigma: float, n_maps: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Draw one IFS of the given sigma-factor complexity.

    As the released code does, the target itself is jittered:
    ``sigma_drawn ~ U(sigma - 0.1, sigma + 0.1)`` (clipped into (0, 3N)).
    Each linear part is ``R(t1) S1 diag(s1, s2) R(t2) S2`` and each translation
    ``(e, f) ~ U(-1, 1)^2``.

    Returns ``(maps, sigma_drawn)``: maps float64 (N, 6) as (a, b, c, d, e, f).
    """
    low = max(sigma - 0.1, 1e-9)
    high = min(sigma + 0.1, 3.0 * n_maps - 1e-9)
    sigma_drawn = float(rng.uniform(low, high))
    singular = sample_singular_values(sigma_drawn, n_maps, rng)
    maps = np.empty((n_maps, PARAMS_PER_MAP), dtype=np.float64)
    for j in range(n_maps):
        linear = (
            _rotation(rng.uniform(-np.pi, np.pi)) @ _sign_flip(rng)
            @ np.diag(singular[j])
            @ _rotation(rng.uniform(-np.pi, np.pi)) @ _sign_flip(rng)
        )
        translation = rng.uniform(-1.0, 1.0, size=2)
        maps[j] = (linear[0, 0], linear[0, 1], linear[1, 0], linear[1, 1], translation[0], translation[1])
    return maps, sigma_drawn


def sigma_factor(maps: np.ndarray) -> float:
    """``sum_j (s_j1 + 2 s_j2)`` of the linear parts of ``maps`` (N, 6)."""
    total = 0.0
    for a, b, c, d, _, _ in maps:
        s = np.linalg.svd(np.array([[a, b], [c, d]]), compute_uv=False)
        total += s[0] + 2.0 * s[1]
    return float(total)


def map_probabilities(maps: np.ndarray) -> np.ndarray:
    """``p_j = |det A_j| / sum_k |det A_k|`` as float64 (N,).

    A system whose maps are all singular gets uniform probabilities (the
    released code would divide by zero)."""
    det = np.abs(maps[:, 0] * maps[:, 3] - maps[:, 1] * maps[:, 2])
    total = det.sum()
    if not total > 0:
        return np.full(len(maps), 1.0 / len(maps))
    return det / total
