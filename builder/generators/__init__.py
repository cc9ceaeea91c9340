"""The registry of data-set kinds. A new kind is one module (or one package:
the kind in its ``__init__``, its kernels beside it) with a
:class:`~fracbuild.generators.base.Generator` subclass whose parameter
fields declare their flags (:func:`~fracbuild.generators.base.param`); listed
here, it gets its options in ``fracbuild render``."""

from __future__ import annotations

from ..errors import UserError
from .base import Generator, Sample
from .contour import RCDB, VisualAtom
from .fractaldb import OFDB, FractalDB
from .noise import Noise
from .onepfrac import OnePFrac
from .realimage import RealImage

KINDS: dict[str, type[Generator]] = {
    cls.kind: cls for cls in (OnePFrac, FractalDB, OFDB, RCDB, VisualAtom, Noise, RealImage)
}
DEFAULT_KIND = OnePFrac.kind


def get_kind(name: str) -> type[Generator]:
    try:
        return KINDS[name]
    except KeyError:
        raise UserError(f"unknown kind {name!r}; choose from {', '.join(sorted(KINDS))}") from None


__all__ = ["KINDS", "DEFAULT_KIND", "Generator", "Sample", "get_kind"]
