"""Local perturbation of an IFS's parameters (LIEP): one epsilon per class."""

from __future__ import annotations

import numpy as np

from .errors import UserError

MODES = ("multiplicative", "additive")  # the first is the default
DEFAULT_DELTA = 0.1  # the paper's Delta


def validate(num_classes: int, mode: str, delta: float) -> None:
    """The checks every perturbed kind shares: L >= 1, a known mode, and a
    degree in (0, 1) for multiplicative factors (in (0, inf) for additive
    offsets). Raises UserError naming the option."""
    if num_classes < 1:
        raise UserError(f"--L must be >= 1, got {num_classes}")
    if mode not in MODES:
        raise UserError(f"--perturbation must be one of {', '.join(MODES)}, got {mode!r}")
    if not delta > 0:
        raise UserError(f"--delta must be > 0, got {delta}")
    if mode == "multiplicative" and delta >= 1:
        raise UserError(f"--delta must be < 1 in multiplicative mode (a factor could reach 0), got {delta}")


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
