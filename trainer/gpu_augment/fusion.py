"""Optional kernel fusion of the device work with ``torch.compile``.

In eager PyTorch every elementwise operation reads and writes its whole
tensor: the bicubic resampling of the geometric ops alone writes about
3 GB per batch of 256 at 224 px (a 16-tap int64 index, the gathered taps,
the cubic polynomial's terms), where one fused kernel reads the taps and
writes one float per pixel. ``fused`` marks such pure tensor functions;
inside ``enabled(True)`` they run compiled (Inductor: Triton kernels on a
GPU, C++ on the CPU), elsewhere eagerly, as written.

Compiled with ``dynamic=True``: the batch of an op's subset changes every
step, which must not recompile. Everything that changes per step is a
tensor argument; plain Python arguments (sizes, the fill colour, the
interpolation) are fixed for a run, since Dynamo specialises on them. If
compiling a function fails (no compiler, an unsupported operation), a
warning says so and that function runs eagerly from then on.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import warnings
from typing import Any, Callable, Iterator

import torch

_ENABLED = contextvars.ContextVar("fractrain_gpu_augment_fusion", default=False)
_COMPILED: dict[Callable, Callable] = {}
_FAILED: set[Callable] = set()
_WARNED: set[Callable] = set()
# Dynamo's and Inductor's failures (a missing compiler comes wrapped as
# BackendCompilerFailed); errors of the function itself propagate as usual.
_COMPILE_ERRORS = (torch._dynamo.exc.TorchDynamoException,)
# Each function meets a few variants (a pass's input is uint8 or float, its
# weights transposed or not, one or three of them, a subset of 1 sample): more
# than Dynamo's default of 8 compiled versions when several recipes share a
# process (benchmarks). Past this limit a new variant runs eagerly.
RECOMPILE_LIMIT = 64
# Names differ across torch releases (2.11 on the GPU machines, 2.14 here).
_LIMIT_KEY = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
_LIMIT_HIT = getattr(torch._dynamo.exc, "FailOnRecompileLimitHit", ())  # (): catches nothing


def _warn_once(fn: Callable, message: str) -> None:
    if fn not in _WARNED:
        _WARNED.add(fn)
        warnings.warn(f"gpu_augment: {fn.__qualname__}: {message}", RuntimeWarning, stacklevel=3)


def fused(fn: Callable | None = None, *, dynamic: bool = True) -> Callable:
    """Decorator: ``fn`` runs compiled inside ``enabled(True)``, else as written.
    ``@fused`` compiles for shapes that change (``dynamic=True``);
    ``@fused(dynamic=False)`` for a function whose shapes are fixed for a run
    (static.py's whole batch: constant sizes let Inductor index with 32-bit
    integers and divide by constants)."""
    if fn is None:
        return functools.partial(fused, dynamic=dynamic)

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        # Inside another compiled function Dynamo traces the body itself.
        if torch.compiler.is_compiling() or not _ENABLED.get() or fn in _FAILED:
            return fn(*args, **kwargs)
        compiled = _COMPILED.get(fn)
        if compiled is None:
            compiled = _COMPILED[fn] = torch.compile(fn, dynamic=dynamic, fullgraph=True)
        try:
            return compiled(*args, **kwargs)
        except _LIMIT_HIT:
            _warn_once(fn, f"more than {RECOMPILE_LIMIT} compiled variants; new ones run eagerly")
            return fn(*args, **kwargs)
        except _COMPILE_ERRORS as error:
            _FAILED.add(fn)
            first_line = str(error).splitlines()[0] if str(error) else ""
            _warn_once(fn, f"compiling failed ({type(error).__name__}: {first_line}); it runs eagerly")
            return fn(*args, **kwargs)

    return call


@contextlib.contextmanager
def enabled(on: bool = True) -> Iterator[None]:
    """Run the ``fused`` functions called inside compiled (on) or eagerly."""
    token = _ENABLED.set(on)
    try:
        if on:
            with torch._dynamo.config.patch(**{_LIMIT_KEY: RECOMPILE_LIMIT}):
                yield
        else:
            yield
    finally:
        _ENABLED.reset(token)
