"""Work-arounds for known breakage between timm and its dependencies.

Pillow >= 13 raises ``ValueError: bits must be between or equal to 1 and 8``
from ``ImageOps.posterize(img, 0)``. timm's RandAugment with the increasing
ops (``inc1``, the paper's ``rand-m9-mstd0.5-inc1``) maps magnitude 10 to
``PosterizeIncreasing`` with 0 bits kept (``4 - int(m / 10 * 4)``), and with
``mstd0.5`` a magnitude-9 policy reaches 10 often enough to kill a run
(seen with timm 1.0.31). Keeping 0 bits masks every pixel to 0, so the
right answer is a black image of the same mode and size, which is what
older Pillow returned.

timm binds the op by name in ``timm.data.auto_augment.NAME_TO_OP`` and each
``AugmentOp`` copies its function at construction, so the patch replaces the
dictionary entries (and the module attribute) once, at import of this
module, before any transform is built. It is idempotent.
"""

from __future__ import annotations

from PIL import Image

import timm.data.auto_augment as _auto_augment

_POSTERIZE_OPS = ("Posterize", "PosterizeIncreasing", "PosterizeOriginal")


def safe_posterize(img: Image.Image, bits_to_keep: int, **kwargs) -> Image.Image:
    """timm's ``posterize`` that also accepts 0 bits (-> a black image)."""
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return _original_posterize(img, bits_to_keep, **kwargs)


_original_posterize = getattr(_auto_augment.posterize, "__wrapped_original__", _auto_augment.posterize)
safe_posterize.__wrapped_original__ = _original_posterize  # type: ignore[attr-defined]


def patch_posterize() -> None:
    """Route timm's posterize ops through :func:`safe_posterize`."""
    _auto_augment.posterize = safe_posterize
    for name in _POSTERIZE_OPS:
        if name in _auto_augment.NAME_TO_OP:
            _auto_augment.NAME_TO_OP[name] = safe_posterize


patch_posterize()
