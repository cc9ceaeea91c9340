"""1p-frac: one IFS of a chosen sigma-factor, perturbed L times; each
perturbation is a class."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .. import ifs, perturb, render, seeds
from ..errors import BuildFailure, UserError
from . import ifs_params
from .base import OneImagePerClass, ProgressCallback, Sample, classes_param, delta_param, param, perturbation_param, \
    size_param



@dataclass(frozen=True)
class OnePFracParams:
    num_classes: int = classes_param()
    delta: float = delta_param()
    perturbation: str = perturbation_param()
    sigma: float = param(3.5, flag="--sigma",
                         help="Sigma-factor (complexity) of the base system; must lie in (0, 3 x maps)")
    n_maps: int = param(2, flag="--n-maps", help="Affine maps in the system (N)")
    size: int = size_param(512)
    pad: int = ifs_params.pad()
    iterations: int = ifs_params.iterations(100_000)
    mask: str = ifs_params.mask()
    threshold: float = param(0.05, flag="--threshold", unit="fraction",
                             help="Fill check: accept an image whose share of pixels > 1 is strictly above this")
    chaos_stream: str = ifs_params.chaos_stream("seeded")
    max_attempts: int = param(100, flag="--max-attempts", help="Fresh epsilons per class before the build fails")
    search_trials: int = param(32, flag="--search-trials",
                               help="Trial perturbations per candidate base system in the search")
    min_acceptance: float = param(0.5, flag="--min-acceptance", unit="fraction",
                                  help="Share of trial perturbations that must pass for a base system to be chosen")
    max_candidates: int = param(2000, flag="--max-candidates",
                                help="Candidate systems the search may try before the build fails")


class RenderInputs:
    """The random inputs every class of one data set shares: the chaos-game
    map sequence (from one uniform stream and the base probabilities)."""

    def __init__(self, params: OnePFracParams, seed: int, probabilities: np.ndarray):
        uniforms = render.chaos_uniforms(params.chaos_stream, seed, params.iterations)
        self.steps = render.map_sequence(uniforms, probabilities)


def _render_attempt(params: OnePFracParams, maps: np.ndarray, steps: np.ndarray,
                    rng: np.random.Generator) -> tuple[np.ndarray, float]:
    mask_codes = render.draw_mask_codes(rng, params.iterations) if params.mask == "random" else None
    image = render.render_ifs(maps, steps, params.size, params.pad, mask_codes)
    return image, render.fill_rate(image)


class OnePFrac(OneImagePerClass):
    kind = "1p-frac"
    Params = OnePFracParams
    summary = "one IFS perturbed L times (Nakamura et al.); a class is one perturbation"

    @classmethod
    def validate(cls, p: OnePFracParams) -> None:
        if p.n_maps < 1:
            raise UserError(f"--n-maps must be >= 1, got {p.n_maps}")
        if not 0 < p.sigma < 3 * p.n_maps:
            raise UserError(f"--sigma must lie in (0, {3 * p.n_maps}) for {p.n_maps} maps, got {p.sigma}")
        perturb.validate(p.num_classes, p.perturbation, p.delta)
        if p.pad < 0:
            raise UserError(f"--pad must be >= 0, got {p.pad}")
        if p.size - 2 * p.pad < 4:
            raise UserError(f"--size {p.size} is too small for pad {p.pad}: need size >= 2*pad + 4")
        if p.iterations < 2:
            raise UserError(f"--iterations must be >= 2, got {p.iterations}")
        if p.mask not in render.MASK_MODES:
            raise UserError(f"--mask must be one of {', '.join(render.MASK_MODES)}, got {p.mask!r}")
        if not 0 <= p.threshold < 1:
            raise UserError(f"--threshold must lie in [0, 1), got {p.threshold}")
        if p.chaos_stream not in render.CHAOS_STREAMS:
            raise UserError(f"--chaos-stream must be one of {', '.join(render.CHAOS_STREAMS)}, "
                            f"got {p.chaos_stream!r}")
        for name in ("max_attempts", "search_trials", "max_candidates"):
            if getattr(p, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(p, name)}")
        if not 0 <= p.min_acceptance <= 1:
            raise UserError(f"--min-acceptance must lie in [0, 1], got {p.min_acceptance}")

    @classmethod
    def prepare(cls, params: OnePFracParams, seed: int, log: ProgressCallback, workers: int | None = None) -> dict:
        """Search for the base system (see :func:`search`)."""
        return search(params, seed, log)

    def __init__(self, params: OnePFracParams, seed: int, system: dict):
        super().__init__(params, seed, system)
        self.base = np.asarray(system["maps"], dtype=np.float64)
        self.probabilities = np.asarray(system["probabilities"], dtype=np.float64)
        self.inputs = RenderInputs(params, seed, self.probabilities)

    def render(self, index: int) -> Sample:
        """Class ``index``: draw epsilons from the class's own stream until the
        image's fill rate is strictly above the threshold."""
        p = self.params
        rng = seeds.rng(self.seed, seeds.SAMPLE, index)
        for attempt in range(1, p.max_attempts + 1):
            epsilon = perturb.draw_epsilon(rng, p.perturbation, p.delta, self.base.shape)
            maps = perturb.apply_epsilon(self.base, epsilon, p.perturbation)
            image, fill = _render_attempt(p, maps, self.inputs.steps, rng)
            if fill > p.threshold:
                record = {"epsilon": epsilon.tolist(), "attempts": attempt, "fill_rate": fill}
                return Sample(image=image, label=index, record=record)
        raise BuildFailure(
            f"class {index}: no perturbation passed the fill check in {p.max_attempts} attempts "
            f"(threshold {p.threshold}); try another --seed or a smaller --delta")

    def streams(self) -> dict[str, str]:
        chaos = render.chaos_stream_doc(self.params.chaos_stream)
        return {
            "search": seeds.STREAM_DOC["search"] + ": per candidate, sigma, singular values, angles, "
                      "flips, translations, its mask codes, then per trial an epsilon and mask codes",
            "chaos": chaos + "; map k at step t is the first j with r_t <= cumsum(p)_j",
            "class": seeds.STREAM_DOC["sample"] + ": per attempt, epsilon (N*6 values, row-major) "
                     "then, in random mask mode, integers(1, 512, size=iterations, dtype=int16)",
        }


def search(params: OnePFracParams, seed: int, log: ProgressCallback) -> dict:
    """Sample base systems from the seed until one passes the fill check and
    at least ``min_acceptance`` of ``search_trials`` trial epsilons pass it too.

    Returns the system record: maps (N, 6) as nested lists, probabilities,
    the sigma drawn, the acceptance estimate and how long it took.
    """
    started = time.perf_counter()
    rng = seeds.rng(seed, seeds.SEARCH)
    uniforms = render.chaos_uniforms(params.chaos_stream, seed, params.iterations)
    needed = int(np.ceil(params.min_acceptance * params.search_trials))
    for candidate in range(1, params.max_candidates + 1):
        maps, sigma_drawn = ifs.sample_ifs(params.sigma, params.n_maps, rng)
        probabilities = ifs.map_probabilities(maps)
        steps = render.map_sequence(uniforms, probabilities)
        _, base_fill = _render_attempt(params, maps, steps, rng)
        if not base_fill > params.threshold:
            continue
        accepted = 0
        for trial in range(params.search_trials):
            epsilon = perturb.draw_epsilon(rng, params.perturbation, params.delta, maps.shape)
            _, fill = _render_attempt(params, perturb.apply_epsilon(maps, epsilon, params.perturbation), steps, rng)
            accepted += fill > params.threshold
            if accepted + (params.search_trials - trial - 1) < needed:
                break  # cannot reach the bar any more
        if accepted >= needed:
            acceptance = accepted / params.search_trials
            seconds = time.perf_counter() - started
            log(f"search: candidate {candidate} accepted (fill {base_fill:.3f}, "
                f"{accepted}/{params.search_trials} trial perturbations pass) in {seconds:.1f} s")
            return {
                "maps": maps.tolist(),
                "probabilities": probabilities.tolist(),
                "sigma_drawn": sigma_drawn,
                "sigma_factor": ifs.sigma_factor(maps),
                "base_fill_rate": base_fill,
                "acceptance_estimate": acceptance,
                "candidates_tried": candidate,
                "search_seconds": seconds,
            }
    raise BuildFailure(
        f"search: none of {params.max_candidates} base systems at sigma {params.sigma} passed the fill check "
        f"with >= {params.min_acceptance:.0%} of {params.search_trials} perturbations at delta {params.delta}")
