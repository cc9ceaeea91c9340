"""What a data-set kind is: a pluggable generator.

A kind supplies (1) a frozen dataclass of its parameters, each field declared
with :func:`param` (its flag, help, unit and default, from which ``render``'s
options are generated), (2) ``prepare``, run once in the main process, that
makes every decision shared by all samples (for 1p-frac: the search for the
base IFS) and returns it as a JSON-able "system" record for the manifest, and
(3) ``render(index)``, a pure function
of (params, seed, system, index) that workers call in any order. Everything
else (pool, shards, manifest, verify, preview, resume) is the same for every
kind and lives outside the generators.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np

from .. import perturb
from ..errors import UserError

NUM_CLASSES = 1000  # L of the paper's 1p-frac, the default of every kind with classes of perturbations


@dataclass
class Sample:
    """One rendered sample.

    image: uint8 (H, W) grayscale or (H, W, 3) RGB.
    label: the class index in [0, num_classes).
    record: JSON-able facts for the sample's ``json`` field in its shard
        (epsilon, attempts, fill rate, ...); where a class is one image, the
        manifest's per-class record too.
    """

    image: np.ndarray
    label: int
    record: dict[str, Any] = field(default_factory=dict)


ProgressCallback = Callable[[str], None]


def param(default: Any, *, flag: str, help: str, unit: str | None = None, choices: tuple[str, ...] | None = None,
          type: type | None = None, shown: Any = None) -> Any:
    """A field of a kind's parameter dataclass that also says how the command
    line sets it, so that a kind's options live with the kind.

    default: the value when the user does not give ``flag``, stated only here.
    flag: the option that sets it (``--L``); a flag means one field name in
        every kind that takes it.
    help: what it is, a phrase without its unit; unit: appended to the help
        (``pixels``, ``fraction``).
    choices: the values allowed (strings); type: the value's type where
        ``default`` is None and cannot tell it.
    shown: the default the help states where ``default`` is None because
        the value is decided later (a number, or words).
    """
    metadata = {"flag": flag, "help": help, "unit": unit, "choices": choices, "type": type, "shown": shown}
    return field(default=default, metadata=metadata)


def like(params_cls: type, name: str) -> Any:
    """The field ``name`` of another parameter dataclass again (its default,
    flag and help): kinds that share a parameter state it once."""
    (source,) = [f for f in dataclasses.fields(params_cls) if f.name == name]
    return field(default=source.default, metadata=source.metadata)


# Parameters every perturbed kind shares (1p-frac, noise, real-image, LPCE).
def classes_param(default: int | None = NUM_CLASSES, **overrides: Any) -> Any:
    """--L: the number of classes."""
    return param(default, **{"flag": "--L", "help": "Number of classes (L), each one perturbation", "type": int,
                             **overrides})


def delta_param(default: float | None = perturb.DEFAULT_DELTA, **overrides: Any) -> Any:
    """--delta: the perturbation degree."""
    return param(default, **{"flag": "--delta", "type": float,
                             "help": "Perturbation degree: factors in U(1-delta, 1+delta) (multiplicative) or offsets "
                                     "in U(-delta/2, delta/2) (additive)", **overrides})


def perturbation_param(default: str | None = perturb.MODES[0], **overrides: Any) -> Any:
    """--perturbation: multiplicative factors or additive offsets."""
    return param(default, **{"flag": "--perturbation", "choices": perturb.MODES,
                             "help": "multiplicative: the released code (paper's numbers); additive: the paper's Eq. 9",
                             **overrides})


def size_param(default: int) -> Any:
    """--size: the image side."""
    return param(default, flag="--size", help="Image side", unit="pixels")


class Generator(ABC):
    """Base class of every kind. Subclasses set ``kind`` and ``Params``."""

    kind: ClassVar[str]
    Params: ClassVar[type]
    summary: ClassVar[str] = ""

    def __init__(self, params: Any, seed: int, system: dict[str, Any]):
        self.params = params
        self.seed = seed
        self.system = system

    # --- parameters -------------------------------------------------------
    @classmethod
    def make_params(cls, values: dict[str, Any]) -> Any:
        """Build and validate ``Params`` from a dict; unknown keys and bad
        values raise :class:`UserError`."""
        names = {f.name for f in dataclasses.fields(cls.Params)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise UserError(f"kind {cls.kind!r} has no option(s) {', '.join(unknown)}")
        try:
            params = cls.Params(**values)
        except TypeError as error:  # a wrong type in a manifest
            raise UserError(f"bad parameters for kind {cls.kind!r}: {error}") from None
        cls.validate(params)
        return params

    @classmethod
    def validate(cls, params: Any) -> None:
        """Raise :class:`UserError` naming the first bad parameter."""

    # --- the two steps ----------------------------------------------------
    @classmethod
    def prepare(cls, params: Any, seed: int, log: ProgressCallback, workers: int | None = None) -> dict[str, Any]:
        """Decisions shared by all samples, as a JSON-able dict (default: none).
        ``workers``: how many CPUs it may keep busy (None: all); the result
        must not depend on it."""
        return {}

    @abstractmethod
    def num_samples(self) -> int:
        """How many samples the data set holds."""

    @abstractmethod
    def num_classes(self) -> int:
        """How many classes the labels range over."""

    @abstractmethod
    def image_size(self) -> int:
        """Side of the square images, in pixels."""

    @abstractmethod
    def render(self, index: int) -> Sample:
        """Render sample ``index``; deterministic in (params, seed, system, index)."""

    def streams(self) -> dict[str, str]:
        """How each random stream derives from the seed (for the manifest)."""
        return {}


class OneImagePerClass(Generator):
    """A kind whose every class is one image, and whose ``Params`` have
    ``num_classes`` (L) and ``size``: 1p-frac, noise, real-image."""

    def num_samples(self) -> int:
        return self.params.num_classes

    def num_classes(self) -> int:
        return self.params.num_classes

    def image_size(self) -> int:
        return self.params.size
