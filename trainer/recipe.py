"""The augmentation recipe, shared by the CPU (timm transforms) and the GPU
input paths so that both read the same numbers.

Defaults are the paper's pre-training recipe (its released scripts): DeiT
augmentation with mean = std = 0.5 on grayscale images expanded to 3 channels.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

# Names a user can pass to switch one augmentation off (the paper's Table 9).
SWITCHES = ("randaugment", "crop", "aspect", "erasing", "mixup", "cutmix", "flips", "color-jitter")


@dataclass(frozen=True)
class AugmentRecipe:
    input_size: int = 224
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    # RandomResizedCrop. With "crop" off the whole image is resized; with
    # "aspect" off the ratio range collapses to (1, 1).
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    crop: bool = True
    hflip: float = 0.5
    vflip: float = 0.5
    auto_augment: str | None = "rand-m9-mstd0.5-inc1"
    color_jitter: float = 0.4
    # Random erasing probability, mode and count (timm's re_prob/re_mode/re_count).
    reprob: float = 0.5
    remode: str = "pixel"
    recount: int = 1
    # Mixup / CutMix (timm.data.Mixup arguments).
    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    mix_prob: float = 1.0
    switch_prob: float = 0.5
    label_smoothing: float = 0.1

    def without(self, names: list[str] | tuple[str, ...]) -> "AugmentRecipe":
        """A copy with the named augmentations switched off (see SWITCHES)."""
        unknown = sorted(set(names) - set(SWITCHES))
        if unknown:
            raise ValueError(f"unknown augmentation(s) {', '.join(unknown)}; choose from {', '.join(SWITCHES)}")
        off = {
            "randaugment": {"auto_augment": None},
            "crop": {"crop": False},
            "aspect": {"ratio": (1.0, 1.0)},
            "erasing": {"reprob": 0.0},
            "mixup": {"mixup_alpha": 0.0},
            "cutmix": {"cutmix_alpha": 0.0},
            "flips": {"hflip": 0.0, "vflip": 0.0},
            "color-jitter": {"color_jitter": 0.0},
        }
        changes: dict = {}
        for name in names:
            changes.update(off[name])
        return dataclasses.replace(self, **changes)

    @property
    def mixes(self) -> bool:
        """Whether Mixup or CutMix is active (targets become soft)."""
        return self.mix_prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)
