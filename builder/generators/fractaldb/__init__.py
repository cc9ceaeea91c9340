"""FractalDB (Kataoka et al., ACCV 2020) and OFDB (Nakamura et al., ICCV 2023):
C searched IFS categories; FractalDB renders each under 25 weight rows x
``repeats`` renders x 4 flips, OFDB renders one image per category."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ... import render, seeds
from ...errors import BuildFailure, UserError
from .. import ifs_params
from ..base import Generator, ProgressCallback, Sample, like, param, size_param
from . import search as fractaldb_search

FLIPS = ("none", "top-bottom", "left-right", "both")  # the order of the 4 views of a render
CANDIDATES_PER_CATEGORY = 1000  # default search budget


@dataclass(frozen=True)
class FractalDBParams:
    num_categories: int = param(1000, flag="--categories", help="Number of categories (C), each a class")
    instances: int | None = param(None, flag="--instances", type=int, shown="all, 25 x repeats x 4 = 1,000",
                                  help="Images per category: the first n of the canonical order (weight row, "
                                       "repeat, flip)")
    repeats: int = param(10, flag="--repeats", help="Renders per weight row, each with fresh 3x3 masks")
    weight_step: float = param(0.4, flag="--weight-step",
                               help="k of the weight rows, which multiply one parameter of every map by 1-2k, 1-k, "
                                    "1+k, 1+2k (the released run: 0.4; a 0.1 table also ships)")
    size: int = size_param(362)
    pad: int = ifs_params.pad()
    iterations: int = ifs_params.iterations(200_000)
    mask: str = ifs_params.mask()
    chaos_stream: str = ifs_params.chaos_stream("legacy")  # numpy.random.seed(100), as the released renderer
    threshold: float = param(0.2, flag="--threshold", unit="fraction",
                             help="Fill check: accept a category whose one-pixel search image has at least this "
                                  "share of pixels set")
    search_size: int = param(512, flag="--search-size", unit="pixels",
                             help="Side of the one-pixel-per-point search image")
    search_iterations: int = param(100_000, flag="--search-iterations", help="Chaos-game points of the search image")
    search_stream: str = param("seeded", flag="--search-stream", choices=fractaldb_search.SEARCH_STREAMS,
                               help="Candidate draws from --seed per candidate, or the released script's one "
                                    "numpy.random.seed(--seed) stream (the released run: --seed 1)")
    max_candidates: int | None = param(None, flag="--max-candidates", type=int,
                                       shown=f"{CANDIDATES_PER_CATEGORY:,} per category",
                                       help="Candidate systems the search may try before the build fails")


@dataclass(frozen=True)
class OFDBParams:
    num_categories: int = like(FractalDBParams, "num_categories")
    weight_row: int = param(0, flag="--weight-row",
                            help="The weight row of its one render per category, in the released table's order "
                                 "(0: a x (1-2k), the released render; 2: identity)")
    weight_step: float = like(FractalDBParams, "weight_step")
    size: int = like(FractalDBParams, "size")
    pad: int = like(FractalDBParams, "pad")
    iterations: int = like(FractalDBParams, "iterations")
    mask: str = like(FractalDBParams, "mask")
    chaos_stream: str = like(FractalDBParams, "chaos_stream")
    threshold: float = like(FractalDBParams, "threshold")
    search_size: int = like(FractalDBParams, "search_size")
    search_iterations: int = like(FractalDBParams, "search_iterations")
    search_stream: str = like(FractalDBParams, "search_stream")
    max_candidates: int | None = like(FractalDBParams, "max_candidates")


def _check_common(p) -> None:
    if p.num_categories < 1:
        raise UserError(f"--categories must be >= 1, got {p.num_categories}")
    if not 0 < p.weight_step < 0.5:
        raise UserError(f"--weight-step must lie in (0, 0.5) (a factor 1 - 2k must stay > 0), got {p.weight_step}")
    if p.pad < 0:
        raise UserError(f"--pad must be >= 0, got {p.pad}")
    for name, size in (("--size", p.size), ("--search-size", p.search_size)):
        if size - 2 * p.pad < 4:
            raise UserError(f"{name} {size} is too small for pad {p.pad}: need size >= 2*pad + 4")
    for name, count in (("--iterations", p.iterations), ("--search-iterations", p.search_iterations)):
        if count < 2:
            raise UserError(f"{name} must be >= 2, got {count}")
    if p.mask not in render.MASK_MODES:
        raise UserError(f"--mask must be one of {', '.join(render.MASK_MODES)}, got {p.mask!r}")
    if p.chaos_stream not in render.CHAOS_STREAMS:
        raise UserError(f"--chaos-stream must be one of {', '.join(render.CHAOS_STREAMS)}, got {p.chaos_stream!r}")
    if p.search_stream not in fractaldb_search.SEARCH_STREAMS:
        raise UserError(f"--search-stream must be one of {', '.join(fractaldb_search.SEARCH_STREAMS)}, "
                        f"got {p.search_stream!r}")
    if not 0 < p.threshold <= 1:
        raise UserError(f"--threshold must lie in (0, 1], got {p.threshold}")
    if p.max_candidates is not None and p.max_candidates < p.num_categories:
        raise UserError(f"--max-candidates must be >= the number of categories, got {p.max_candidates}")


def search_categories(p, seed: int, log: ProgressCallback, workers: int | None = None,
                      search=None) -> dict:
    """The category search of FractalDB and OFDB, as the system record:
    the search's result plus the weight table. ``search`` has the signature
    of :func:`fracbuild.generators.fractaldb.search.search`, the default (a Ray cluster
    passes its own)."""
    search = search or fractaldb_search.search
    if p.search_stream == "legacy" and seed >= 2**32:
        raise UserError(f"--search-stream legacy seeds numpy.random.seed, which needs --seed < 2^32, got {seed}")
    budget = p.max_candidates or CANDIDATES_PER_CATEGORY * p.num_categories
    try:
        system = search(p.num_categories, stream=p.search_stream, seed=seed,
                        iterations=p.search_iterations, size=p.search_size, pad=p.pad,
                        threshold=p.threshold, max_candidates=budget, log=log, threads=workers)
    except RuntimeError as error:
        raise BuildFailure(f"search: {error}; lower --threshold or raise --max-candidates") from None
    system["weights"] = fractaldb_search.weight_table(p.weight_step).tolist()
    system["weight_rows"] = fractaldb_search.describe_weight_rows(p.weight_step)
    return system


class _Categories:
    """Per-worker view of the searched categories with the render inputs
    shared by all images: the chaos uniforms and each category's map sequence."""

    def __init__(self, p, seed: int, system: dict):
        self.params = p
        self.seed = seed
        self.maps = [np.asarray(c["maps"], dtype=np.float64) for c in system["categories"]]
        self.probabilities = [np.asarray(c["probabilities"], dtype=np.float64) for c in system["categories"]]
        self.weights = np.asarray(system["weights"], dtype=np.float64)
        self.uniforms = render.chaos_uniforms(p.chaos_stream, seed, p.iterations)
        self._steps: tuple[int, np.ndarray] | None = None
        self._render: tuple[tuple[int, int], np.ndarray] | None = None

    def steps(self, category: int) -> np.ndarray:
        """The map sequence of a category (from the unweighted probabilities)."""
        if self._steps is None or self._steps[0] != category:
            self._steps = (category, render.map_sequence(self.uniforms, self.probabilities[category]))
        return self._steps[1]

    def render(self, category: int, row: int, render_id: int) -> np.ndarray:
        """Render ``render_id`` of a category: its maps times weight row ``row``
        (every map's parameters), fresh mask codes from ``(RENDER, c, render_id)``.
        The last render is kept: the 4 flipped views of one render are
        consecutive samples, rendered once."""
        key = (category, render_id)
        if self._render is None or self._render[0] != key:
            p = self.params
            maps = self.maps[category] * self.weights[row][None, :]
            codes = (render.draw_mask_codes(seeds.rng(self.seed, seeds.RENDER, category, render_id), p.iterations)
                     if p.mask == "random" else None)
            self._render = (key, render.render_ifs(maps, self.steps(category), p.size, p.pad, codes))
        return self._render[1]


def flip(image: np.ndarray, view: int) -> np.ndarray:
    """View ``view`` of FLIPS: as is, top-bottom, left-right, both."""
    if view == 1:
        return image[::-1]
    if view == 2:
        return image[:, ::-1]
    if view == 3:
        return image[::-1, ::-1]
    return image


def _streams(p, kind_render: str) -> dict[str, str]:
    search = ("numpy.random.RandomState(seed): per candidate randint(2, 8), uniform(-1, 1, 6) per map, "
              "random_sample(search_iterations)" if p.search_stream == "legacy" else
              "numpy.random.default_rng(SeedSequence(seed, spawn_key=(0, candidate))): integers(2, 8), "
              "uniform(-1, 1, (N, 6)), random(search_iterations)")
    chaos = render.chaos_stream_doc(p.chaos_stream)
    return {
        "search": search + "; a candidate is a category when its one-pixel image's fill is >= threshold",
        "chaos": chaos + ", shared by every image; map k at step t is the first j with r_t <= cumsum(p)_j, "
                 "p the category's unweighted probabilities",
        "render": kind_render,
    }


class FractalDB(Generator):
    kind = "fractaldb"
    Params = FractalDBParams
    summary = "C searched IFS categories x (25 weight rows x repeats x 4 flips) instances (Kataoka et al.)"

    @classmethod
    def validate(cls, p: FractalDBParams) -> None:
        _check_common(p)
        if p.repeats < 1:
            raise UserError(f"--repeats must be >= 1, got {p.repeats}")
        full = fractaldb_search.WEIGHT_ROWS * p.repeats * len(FLIPS)
        if p.instances is not None and not 1 <= p.instances <= full:
            raise UserError(f"--instances must lie in [1, {full}] (25 weight rows x {p.repeats} repeats x 4 flips), "
                            f"got {p.instances}")

    @classmethod
    def prepare(cls, params: FractalDBParams, seed: int, log: ProgressCallback, workers: int | None = None) -> dict:
        return search_categories(params, seed, log, workers)

    def __init__(self, params: FractalDBParams, seed: int, system: dict):
        super().__init__(params, seed, system)
        self.categories = _Categories(params, seed, system)
        self.per_category = params.instances or fractaldb_search.WEIGHT_ROWS * params.repeats * len(FLIPS)

    def num_samples(self) -> int:
        return self.params.num_categories * self.per_category

    def num_classes(self) -> int:
        return self.params.num_categories

    def image_size(self) -> int:
        return self.params.size

    def instance(self, index: int) -> tuple[int, int, int, int]:
        """(category, weight row, repeat, flip) of a sample. Samples are
        category-major; within a category the canonical order is weight row,
        then repeat, then flip."""
        category, j = divmod(index, self.per_category)
        render_id, view = divmod(j, len(FLIPS))
        row, repeat = divmod(render_id, self.params.repeats)
        return category, row, repeat, view

    def render(self, index: int) -> Sample:
        category, row, repeat, view = self.instance(index)
        image = self.categories.render(category, row, row * self.params.repeats + repeat)
        return Sample(image=np.ascontiguousarray(flip(image, view)), label=category,
                      record={"weight_row": row, "repeat": repeat, "flip": view})

    def streams(self) -> dict[str, str]:
        return _streams(self.params, seeds.STREAM_DOC["render"] + " with render = row * repeats + repeat: "
                        "integers(1, 512, size=iterations, dtype=int16), the 3x3 mask codes (random mask mode)")


class OFDB(Generator):
    kind = "ofdb"
    Params = OFDBParams
    summary = "one image per searched FractalDB category (Nakamura et al., ICCV 2023)"

    @classmethod
    def validate(cls, p: OFDBParams) -> None:
        _check_common(p)
        if not 0 <= p.weight_row < fractaldb_search.WEIGHT_ROWS:
            raise UserError(f"--weight-row must lie in [0, {fractaldb_search.WEIGHT_ROWS - 1}], got {p.weight_row}")

    @classmethod
    def prepare(cls, params: OFDBParams, seed: int, log: ProgressCallback, workers: int | None = None) -> dict:
        return search_categories(params, seed, log, workers)

    def __init__(self, params: OFDBParams, seed: int, system: dict):
        super().__init__(params, seed, system)
        self.categories = _Categories(params, seed, system)

    def num_samples(self) -> int:
        return self.params.num_categories

    def num_classes(self) -> int:
        return self.params.num_categories

    def image_size(self) -> int:
        return self.params.size

    def render(self, index: int) -> Sample:
        image = self.categories.render(index, self.params.weight_row, 0)
        return Sample(image=image, label=index, record={})

    def streams(self) -> dict[str, str]:
        return _streams(self.params, seeds.STREAM_DOC["render"] + " with render = 0: integers(1, 512, "
                        "size=iterations, dtype=int16), the 3x3 mask codes (random mask mode)")
