"""Local perturbation of an IFS's parameters (LIEP): one epsilon per class."""

from __future__ import annotations

import numpy as np

MODES = ("multiplicative", "additive")


def draw_epsilon(rng: np.random.Generator, mode: str, delta: float, shape: tuple[int, int]) -> np.ndarray:
    """One epsilon, float64 of ``shape`` (N, 6).

    multiplicative: factors ~ U(1 - delta, 1 + delta) per parameter (what the
        released code does, so what produced the paper's accuracies).
    additive: offsets ~ U(-delta/2, delta/2) per parameter (the paper's Eq. 9).
    """
    if mode == "multiplicative":
        return rng.uniform(1.0 - delta, 1.0 + delta, size=shape)
    if mode == "additive":
        return rng.uniform(-delta / 2.0, delta / 2.0, size=shape)
    raise ValueError(f"unknown perturbation mode {mode!r}")


def apply_epsilon(maps: np.ndarray, epsilon: np.ndarray, mode: str) -> np.ndarray:
    """The perturbed system: ``maps * epsilon`` or ``maps + epsilon``. float64 (N, 6)."""
    if mode == "multiplicative":
        return maps * epsilon
    if mode == "additive":
        return maps + epsilon
    raise ValueError(f"unknown perturbation mode {mode!r}")
