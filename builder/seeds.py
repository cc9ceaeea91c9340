"""Every random stream of a build derives from one root seed.

Streams are numbered children of ``numpy.random.SeedSequence(root)``, reached by
``spawn_key`` rather than by calling ``spawn()`` so that any one of them can be
rebuilt in O(1) (a worker rendering class 20,000 does not draw 20,000 children
first). The manifest records this table so that anyone can re-derive a stream.
"""

from __future__ import annotations

import numpy as np

# spawn_key[0] of each stream family. Never renumber: manifests refer to these.
SEARCH = 0  # base-system search: candidate systems and their trial epsilons
CHAOS = 1  # the one chaos-game uniform stream shared by every class
SAMPLE = 2  # per-sample stream: spawn_key = (SAMPLE, index)
CATEGORY = 3  # per-category stream for kinds that have categories: (CATEGORY, c)
RENDER = 4  # per-render stream of kinds that save several views of one render: (RENDER, c, r)
FIELD = 5  # a random field shared by every class of a one-image kind (noise): (FIELD,)

STREAM_DOC = {
    "search": "numpy.random.default_rng(SeedSequence(seed, spawn_key=(0,)))",
    "chaos": "numpy.random.default_rng(SeedSequence(seed, spawn_key=(1,))).random(iterations)",
    "sample": "numpy.random.default_rng(SeedSequence(seed, spawn_key=(2, index)))",
    "category": "numpy.random.default_rng(SeedSequence(seed, spawn_key=(3, category)))",
    "render": "numpy.random.default_rng(SeedSequence(seed, spawn_key=(4, category, render)))",
    "field": "numpy.random.default_rng(SeedSequence(seed, spawn_key=(5,)))",
}


def rng(seed: int, *key: int) -> np.random.Generator:
    """The generator of stream ``key`` under root ``seed`` (PCG64)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=tuple(key)))
