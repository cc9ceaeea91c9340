"""Contour data sets: RCDB (radial contours, Kataoka et al., CVPR 2022) and
VisualAtom (Takashima et al., CVPR 2023), with their LPCE variant.

A category is a handful of drawn scalars (vertices, contours, noise
amplitude, drift, ...); an instance is a drawing of it. With ``--lpce`` one
category becomes L classes: its continuous parameters (start radius, noise
amplitude, drift, oval factors) are perturbed by epsilon exactly as 1p-frac
perturbs an IFS, and every class shares the category's noise draws.

Geometry is in the released code's 512-pixel units, scaled to ``--size``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from ... import perturb, seeds
from ...errors import UserError
from . import contours
from ..base import NUM_CLASSES, Generator, ProgressCallback, Sample, classes_param, delta_param, param, \
    perturbation_param, size_param

# The perturbed parameters, in epsilon's column order.
CONTINUOUS = ("radius", "amplitude", "drift", "oval_x", "oval_y")
# What --lpce takes when the user leaves an LPCE option out: 1p-frac's perturbation defaults.
LPCE_DEFAULTS = {"num_classes": NUM_CLASSES, "delta": perturb.DEFAULT_DELTA, "perturbation": perturb.MODES[0],
                 "category": 0}
NOISE_RANGE = 10_000.0  # Perlin positions u ~ U(0, 10000)


@dataclass(frozen=True)
class ContourParams:
    num_categories: int = param(1000, flag="--categories", help="Number of categories (C), each a class")
    instances: int = param(1000, flag="--instances", help="Images per category (M)")
    size: int = size_param(512)
    lpce: bool = param(False, flag="--lpce",
                       help="One category, L classes by perturbing its continuous parameters (radius, noise "
                            "amplitude, drift, oval factors) by --delta, as 1p-frac does")
    # LPCE only: None without --lpce; with it, unset ones take LPCE_DEFAULTS.
    num_classes: int | None = classes_param(None, shown=LPCE_DEFAULTS["num_classes"],
                                            help="With --lpce: number of classes (L), each one perturbation")
    delta: float | None = delta_param(None, shown=LPCE_DEFAULTS["delta"])
    perturbation: str | None = perturbation_param(None, shown=LPCE_DEFAULTS["perturbation"])
    category: int | None = param(None, flag="--category", type=int, shown=LPCE_DEFAULTS["category"],
                                 help="With --lpce: which category of --seed is perturbed")


def _lpce_settings(p: ContourParams) -> dict[str, Any]:
    return {name: default if getattr(p, name) is None else getattr(p, name) for name, default in LPCE_DEFAULTS.items()}


def _validate(p: ContourParams) -> None:
    if p.size < 8:
        raise UserError(f"--size must be >= 8, got {p.size}")
    defaults = ContourParams()
    if not p.lpce:
        if p.num_categories < 1:
            raise UserError(f"--categories must be >= 1, got {p.num_categories}")
        if p.instances < 1:
            raise UserError(f"--instances must be >= 1, got {p.instances}")
        given = [f.metadata["flag"] for f in dataclasses.fields(p) if f.name in LPCE_DEFAULTS
                 and getattr(p, f.name) is not None]
        if given:
            raise UserError(f"{', '.join(given)} {'needs' if len(given) == 1 else 'need'} --lpce "
                            "(without it a class is a category: see --categories)")
        return
    for option, name in (("--categories", "num_categories"), ("--instances", "instances")):
        if getattr(p, name) != getattr(defaults, name):
            raise UserError(f"{option} has no effect with --lpce (one category, L classes of one image: use --L)")
    s = _lpce_settings(p)
    perturb.validate(s["num_classes"], s["perturbation"], s["delta"])
    if s["category"] < 0:
        raise UserError(f"--category must be >= 0, got {s['category']}")


class ContourKind(Generator):
    """What RCDB and VisualAtom share: categories, instances, LPCE. A
    subclass draws a category's scalars and an instance's draws (its noise
    included), and says how the noise is formed (factor, sinusoids), where
    the centre enters and what the background is."""

    Params = ContourParams
    background: int

    # --- to be supplied by the kind -----------------------------------------
    @staticmethod
    def draw_category(rng: np.random.Generator) -> dict[str, Any]:
        raise NotImplementedError

    def draw_instance(self, rng: np.random.Generator, category: int, scalars: dict) -> dict[str, Any]:
        """The per-image draws; 'grays' uint8 (L,) and 'noise_u' float64 (L, 2, K)
        included, with 'radius', 'oval_x', 'oval_y', 'centre' (x, y)."""
        raise NotImplementedError

    @staticmethod
    def frequencies(scalars: dict) -> tuple[int, ...]:
        """The sinusoid frequencies subtracted from the noise (none by default)."""
        return ()

    noise_factor: float  # n = ((c P(u)) * noise_factor - c) - sinusoids
    centre_in_positions: bool  # the positions include the centre from the start

    # --- the shared parts -----------------------------------------------------
    @classmethod
    def make_params(cls, values: dict[str, Any]) -> ContourParams:
        """With ``lpce`` set, the LPCE options the user left out take their
        defaults here, so the manifest records the values used."""
        if values.get("lpce"):
            values = {**LPCE_DEFAULTS, **{k: v for k, v in values.items() if v is not None}}
        return super().make_params(values)

    @classmethod
    def validate(cls, p: ContourParams) -> None:
        _validate(p)

    @classmethod
    def prepare(cls, params: ContourParams, seed: int, log: ProgressCallback, workers: int | None = None) -> dict:
        if not params.lpce:
            categories = [cls.draw_category(seeds.rng(seed, seeds.CATEGORY, c)) for c in range(params.num_categories)]
            return {"categories": categories}
        s = _lpce_settings(params)
        return {"lpce": s, "base": cls.draw_category(seeds.rng(seed, seeds.CATEGORY, s["category"])),
                "perturbed": list(CONTINUOUS)}

    def __init__(self, params: ContourParams, seed: int, system: dict):
        super().__init__(params, seed, system)
        self.lpce = _lpce_settings(params) if params.lpce else None
        self._base_instance: dict | None = None

    def num_samples(self) -> int:
        p = self.params
        return self.lpce["num_classes"] if self.lpce else p.num_categories * p.instances

    def num_classes(self) -> int:
        return self.lpce["num_classes"] if self.lpce else self.params.num_categories

    def image_size(self) -> int:
        return self.params.size

    def draw(self, scalars: dict, instance: dict, values: np.ndarray, canvas: int | None = None,
             origin: int = 0) -> np.ndarray:
        """The image of one category/instance with continuous parameters
        ``values`` (CONTINUOUS order). uint8 (size, size)."""
        radius, amplitude, drift, oval_x, oval_y = (float(v) for v in values)
        return contours.render_contours(
            self.params.size, self.background, radius, oval_x, oval_y, instance["centre"], instance["grays"],
            instance["noise_u"], amplitude, drift, noise_factor=self.noise_factor,
            frequencies=self.frequencies(scalars), centre_in_positions=self.centre_in_positions, canvas=canvas,
            origin=origin)

    @staticmethod
    def continuous(scalars: dict, instance: dict) -> np.ndarray:
        return np.array([instance["radius"], scalars["amplitude"], scalars["drift"], instance["oval_x"],
                         instance["oval_y"]], dtype=np.float64)

    def sample_inputs(self, index: int) -> tuple[dict, dict, int]:
        """(category scalars, instance draws, label) of a sample (no LPCE)."""
        category, _ = divmod(index, self.params.instances)
        scalars = self.system["categories"][category]
        instance = self.draw_instance(seeds.rng(self.seed, seeds.SAMPLE, index), category, scalars)
        return scalars, instance, category

    def lpce_base(self) -> dict:
        """The one instance every LPCE class perturbs, from ``(CATEGORY, k, 2)``."""
        if self._base_instance is None:
            k = self.lpce["category"]
            self._base_instance = self.draw_instance(seeds.rng(self.seed, seeds.CATEGORY, k, 2), k,
                                                     self.system["base"])
        return self._base_instance

    def render(self, index: int) -> Sample:
        if self.lpce is None:
            scalars, instance, label = self.sample_inputs(index)
            return Sample(image=self.draw(scalars, instance, self.continuous(scalars, instance)), label=label)
        scalars, instance = self.system["base"], self.lpce_base()
        rng = seeds.rng(self.seed, seeds.SAMPLE, index)
        epsilon = perturb.draw_epsilon(rng, self.lpce["perturbation"], self.lpce["delta"], (1, len(CONTINUOUS)))
        values = perturb.apply_epsilon(self.continuous(scalars, instance)[None, :], epsilon,
                                       self.lpce["perturbation"])[0]
        return Sample(image=self.draw(scalars, instance, values), label=index, record={"epsilon": epsilon.tolist()})

    def streams(self) -> dict[str, str]:
        doc = {"category": seeds.STREAM_DOC["category"] + ": " + self.category_stream_doc}
        if self.lpce is None:
            doc["sample"] = seeds.STREAM_DOC["sample"] + ": " + self.instance_stream_doc
        else:
            doc["base"] = ("numpy.random.default_rng(SeedSequence(seed, spawn_key=(3, category, 2))): the base "
                           "instance: " + self.instance_stream_doc)
            doc["class"] = (seeds.STREAM_DOC["sample"] + ": epsilon (1 x 5: " + ", ".join(CONTINUOUS)
                            + "), uniform(1 - delta, 1 + delta) (multiplicative) or uniform(-delta/2, delta/2) "
                            "(additive)")
        return doc


def draw_contour_inputs(rng: np.random.Generator, contours_: int, vertices: int,
                        gray_draws: int) -> tuple[np.ndarray, np.ndarray]:
    """An instance's contours, from one ``random((L, 2K + 1))`` consumed in
    the released drawing order: per contour its gray
    (``int(r * gray_draws)``, uniform over 0..gray_draws-1), then the Perlin
    positions ``10000 r`` of x for vertex 0..K-1, then those of y.
    Returns (gray draws int64 (L,), noise_u float64 (L, 2, K))."""
    uniforms = rng.random((contours_, 2 * vertices + 1))
    grays = (uniforms[:, 0] * gray_draws).astype(np.int64)
    noise_u = (uniforms[:, 1:] * NOISE_RANGE).reshape(contours_, 2, vertices)
    return grays, noise_u


def painted_grays(draws: np.ndarray) -> np.ndarray:
    """The value a gray draw paints: the released RCDB draws 0..256 and
    Pillow clamps each channel to 255, so 255 comes twice as often.
    int (L,) -> uint8 (L,)."""
    return np.minimum(np.asarray(draws), 255).astype(np.uint8)


def _centre(rng: np.random.Generator, reach: int) -> tuple[float, float]:
    """(x, y) = ((512 + w) / 2, (512 + h) / 2), h drawn before w, each
    ``integers(-reach, reach + 1)``, as the released code draws them."""
    h = int(rng.integers(-reach, reach + 1))
    w = int(rng.integers(-reach, reach + 1))
    return (contours.CANVAS_UNITS + w) / 2.0, (contours.CANVAS_UNITS + h) / 2.0


class RCDB(ContourKind):
    kind = "rcdb"
    summary = "radial contours: C categories x M instances (Kataoka et al., CVPR 2022)"
    background = 255
    noise_factor = 2.0  # n = 2 c P(u) - c
    centre_in_positions = False
    category_stream_doc = ("vertices = int(exponential(100)) until 3 <= it <= 200, contours = integers(1, 201), "
                           "amplitude = uniform(0, 4), drift = uniform(0, 0.1)")
    instance_stream_doc = ("(oval_x, oval_y) = uniform(1, 2, 2), radius = integers(0, 101), centre = "
                           "((512 + w) / 2, (512 + h) / 2) with h then w = integers(-400, 401); then per contour, "
                           "from random((contours, 2 vertices + 1)): gray = min(int(257 r), 255), then "
                           "noise_u = 10000 r for x of vertex 0..K-1, then for y")

    @staticmethod
    def draw_category(rng: np.random.Generator) -> dict[str, Any]:
        while True:
            vertices = int(rng.exponential(100.0))
            if 3 <= vertices <= 200:
                break
        return {"vertices": vertices, "contours": int(rng.integers(1, 201)),
                "amplitude": float(rng.uniform(0.0, 4.0)), "drift": float(rng.uniform(0.0, 0.1))}

    def draw_instance(self, rng: np.random.Generator, category: int, scalars: dict) -> dict[str, Any]:
        oval_x, oval_y = rng.uniform(1.0, 2.0, size=2)
        radius = float(rng.integers(0, 101))
        centre = _centre(rng, 400)
        draws, noise_u = draw_contour_inputs(rng, scalars["contours"], scalars["vertices"], 257)
        return {"radius": radius, "oval_x": float(oval_x), "oval_y": float(oval_y), "centre": centre,
                "grays": painted_grays(draws), "noise_u": noise_u}


class VisualAtom(ContourKind):
    kind = "visualatom"
    summary = "contours of two sinusoids plus Perlin noise: C categories x M instances (CVPR 2023)"
    background = 0
    noise_factor = 1.0  # n = c P(u) - c - 0.5 sin(n1 t) - 0.5 sin(n2 t)
    centre_in_positions = True
    category_stream_doc = ("vertices = integers(200, 1001), contours = integers(1, 201), amplitude = uniform(0, 4), "
                           "drift = uniform(0, 0.1), radius = integers(10, 61), frequency_1 = integers(0, 21), "
                           "frequency_2 = integers(0, 21) redrawn while equal to a nonzero frequency_1, "
                           "(oval_x, oval_y) = uniform(1, 2, 2)")
    instance_stream_doc = ("centre = ((512 + w) / 2, (512 + h) / 2) with h then w = integers(-512, 513); then "
                           "per contour, from random((contours, 2 vertices + 1)): gray = int(256 r), then "
                           "noise_u = 10000 r for x of vertex 0..K-1, then for y")

    @staticmethod
    def draw_category(rng: np.random.Generator) -> dict[str, Any]:
        scalars = {"vertices": int(rng.integers(200, 1001)), "contours": int(rng.integers(1, 201)),
                   "amplitude": float(rng.uniform(0.0, 4.0)), "drift": float(rng.uniform(0.0, 0.1)),
                   "radius": float(rng.integers(10, 61))}
        first = int(rng.integers(0, 21))
        second = int(rng.integers(0, 21))
        while second == first and first != 0:
            second = int(rng.integers(0, 21))
        oval_x, oval_y = rng.uniform(1.0, 2.0, size=2)
        return {**scalars, "frequency_1": first, "frequency_2": second,
                "oval_x": float(oval_x), "oval_y": float(oval_y)}

    def draw_instance(self, rng: np.random.Generator, category: int, scalars: dict) -> dict[str, Any]:
        """Every instance draws its own centre, grays and noise (the released
        per-instance loop); the shape scalars are the category's."""
        centre = _centre(rng, 512)
        draws, noise_u = draw_contour_inputs(rng, scalars["contours"], scalars["vertices"], 256)
        return {"radius": scalars["radius"], "oval_x": scalars["oval_x"], "oval_y": scalars["oval_y"],
                "centre": centre, "grays": draws.astype(np.uint8), "noise_u": noise_u}

    @staticmethod
    def frequencies(scalars: dict) -> tuple[int, ...]:
        return scalars["frequency_1"], scalars["frequency_2"]
