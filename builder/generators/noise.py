"""Noise (the 1p-frac paper's Table 4): one image of per-pixel noise; L
classes by perturbing the distribution's two parameters by Delta. Every
class uses the same noise field (one fixed draw), so classes differ only in
(mean, std) or (low, high). The paper reports that these fail to pre-train;
the kind is here so users can see that."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import perturb, seeds
from ..errors import UserError
from .base import OneImagePerClass, Sample, classes_param, delta_param, param, perturbation_param, size_param

DISTRIBUTIONS = ("gaussian", "uniform")


@dataclass(frozen=True)
class NoiseParams:
    distribution: str = param("gaussian", flag="--noise", choices=DISTRIBUTIONS,
                              help="Per-pixel N(mean, std^2) or U(low, high), one fixed field for every class")
    num_classes: int = classes_param()
    delta: float = delta_param()
    perturbation: str = perturbation_param()
    mean: float = param(0.5, flag="--noise-mean", help="Gaussian mean", unit="intensity in [0, 1]")
    std: float = param(0.2, flag="--noise-std", help="Gaussian standard deviation", unit="intensity")
    low: float = param(0.2, flag="--noise-low", help="Uniform lower bound", unit="intensity in [0, 1]")
    high: float = param(0.8, flag="--noise-high", help="Uniform upper bound", unit="intensity in [0, 1]")
    size: int = size_param(512)


class Noise(OneImagePerClass):
    kind = "noise"
    Params = NoiseParams
    summary = "one fixed noise field; a class is one perturbation of (mean, std) or (low, high)"

    @classmethod
    def validate(cls, p: NoiseParams) -> None:
        if p.distribution not in DISTRIBUTIONS:
            raise UserError(f"--noise must be one of {', '.join(DISTRIBUTIONS)}, got {p.distribution!r}")
        perturb.validate(p.num_classes, p.perturbation, p.delta)
        if not p.std > 0:
            raise UserError(f"--noise-std must be > 0, got {p.std}")
        if not p.low < p.high:
            raise UserError(f"--noise-low must be below --noise-high, got {p.low} and {p.high}")
        if p.size < 1:
            raise UserError(f"--size must be >= 1, got {p.size}")

    def __init__(self, params: NoiseParams, seed: int, system: dict):
        super().__init__(params, seed, system)
        rng = seeds.rng(seed, seeds.FIELD)
        shape = (params.size, params.size)
        self.field = rng.standard_normal(shape) if params.distribution == "gaussian" else rng.random(shape)
        self.base = np.array([[params.mean, params.std]] if params.distribution == "gaussian"
                             else [[params.low, params.high]], dtype=np.float64)

    def image(self, first: float, second: float) -> np.ndarray:
        """The field under parameters (mean, std) or (low, high), in 0..255.
        uint8 (size, size)."""
        if self.params.distribution == "gaussian":
            values = first + second * self.field
        else:
            values = first + (second - first) * self.field
        return np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)

    def render(self, index: int) -> Sample:
        p = self.params
        epsilon = perturb.draw_epsilon(seeds.rng(self.seed, seeds.SAMPLE, index), p.perturbation, p.delta, (1, 2))
        first, second = perturb.apply_epsilon(self.base, epsilon, p.perturbation)[0]
        return Sample(image=self.image(first, second), label=index, record={"epsilon": epsilon.tolist()})

    def streams(self) -> dict[str, str]:
        draw = "standard_normal((size, size))" if self.params.distribution == "gaussian" else "random((size, size))"
        return {
            "field": seeds.STREAM_DOC["field"] + f": {draw}, shared by every class",
            "class": seeds.STREAM_DOC["sample"] + ": epsilon (1 x 2: the distribution's two parameters), "
                     "uniform(1 - delta, 1 + delta) (multiplicative) or uniform(-delta/2, delta/2) (additive); "
                     "pixel = rint(255 clip(mean + std z, 0, 1)) or rint(255 clip(low + (high - low) u, 0, 1))",
        }
