"""Parameters the IFS kinds (1p-frac, fractaldb, ofdb) share: the raster and
the chaos game's stream. A kind whose default differs passes its own."""

from __future__ import annotations

from typing import Any

from .. import render
from .base import param

PAD = 6  # border kept free, as the released renderers


def pad() -> Any:
    return param(PAD, flag="--pad", help="Border kept free", unit="pixels")


def mask() -> Any:
    return param(render.MASK_MODES[0], flag="--mask", choices=render.MASK_MODES,
                 help="3x3 patch per point: random cells (the released code) or all set")


def iterations(default: int) -> Any:
    return param(default, flag="--iterations", help="Chaos-game points per image, the start point included")


def chaos_stream(default: str) -> Any:
    return param(default, flag="--chaos-stream", choices=render.CHAOS_STREAMS,
                 help="Uniform stream choosing the maps, shared by all images: from --seed, or the released "
                      "code's numpy.random.seed(100)")
