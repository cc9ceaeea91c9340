"""timm's RandAugment (``rand-m9-mstd0.5-inc1`` and its other config strings):
the draws, timm's argument mappings (``LEVEL_TO_ARG``, exact), and a layer
planned on the host (which sample gets which op) and applied on the device to
just the samples each op concerns."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import Tensor

from .draws import draw_rand, draw_randn
from .geometric import affine, rotate_matrix, shear_x_matrix, shear_y_matrix, translate_x_matrix, translate_y_matrix
from .pixel_ops import (auto_contrast_lut, brightness_lut, contrast_lut, equalize_lut, channel_histogram, invert_lut,
                        lut_levels, luma_mean, posterize_lut, solarize_add_lut, solarize_lut, apply_lut, color,
                        sharpness)
from .transfer import to_device


# timm's RandAugment op lists, in timm's order (auto_augment.py), so that an
# op index means the same op here and there.
RAND_INCREASING_TRANSFORMS = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "PosterizeIncreasing",
    "SolarizeIncreasing",
    "SolarizeAdd",
    "ColorIncreasing",
    "ContrastIncreasing",
    "BrightnessIncreasing",
    "SharpnessIncreasing",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
)
RAND_TRANSFORMS = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "Posterize",
    "Solarize",
    "SolarizeAdd",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
)

_LEVEL_DENOM = 10.0  # timm: magnitude M maps to the fraction M / 10 of each op's range
_TRANSLATE_PCT = 0.45  # timm's default hparams['translate_pct'] for the *Rel translations

# Kinds of op, by how they are batched (see plan_rand_augment_layer).
LUT_OPS = {
    "AutoContrast", "Equalize", "Invert", "Posterize", "PosterizeIncreasing", "Solarize",
    "SolarizeIncreasing", "SolarizeAdd", "Contrast", "ContrastIncreasing", "Brightness",
    "BrightnessIncreasing",
}
AFFINE_OPS = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"}
COLOR_OPS = {"Color", "ColorIncreasing"}
SHARPNESS_OPS = {"Sharpness", "SharpnessIncreasing"}


@dataclass(frozen=True)
class RandAugmentConfig:
    """A parsed timm RandAugment string, e.g. ``rand-m9-mstd0.5-inc1``."""

    magnitude: float = 10.0
    num_layers: int = 2
    prob: float = 0.5
    magnitude_std: float = 0.0  # inf: uniform on [0, magnitude]
    magnitude_max: float = _LEVEL_DENOM
    ops: tuple[str, ...] = RAND_TRANSFORMS


def parse_rand_augment(config: str) -> RandAugmentConfig:
    """Parse timm's RandAugment config string (the sections timm's
    ``rand_augment_transform`` knows, except a 't' transform-set choice)."""
    sections = config.split("-")
    if sections[0] != "rand":
        raise NotImplementedError(f"only RandAugment ('rand-...') is implemented on the GPU, not {config!r}")
    values: dict = {}
    increasing = False
    for section in sections[1:]:
        parts = re.split(r"(\d.*)", section)
        if len(parts) < 2:
            continue
        key, val = parts[:2]
        if key == "mstd":
            std = float(val)
            values["magnitude_std"] = float("inf") if std > 100 else std
        elif key == "mmax":
            values["magnitude_max"] = float(int(val))
        elif key == "inc":
            increasing = bool(int(val))
        elif key == "m":
            values["magnitude"] = float(int(val))
        elif key == "n":
            values["num_layers"] = int(val)
        elif key == "p":
            values["prob"] = float(val)
        else:
            raise NotImplementedError(f"RandAugment section {section!r} of {config!r} is not supported")
    ops = RAND_INCREASING_TRANSFORMS if increasing else RAND_TRANSFORMS
    return RandAugmentConfig(ops=ops, **values)


def sample_rand_augment_layer(
    batch: int, cfg: RandAugmentConfig, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One RandAugment layer's per-sample draws, as timm's ``AugmentOp`` makes them.

    Returns ``(op, apply, magnitude, sign)``: op int64 (N,) uniform over
    cfg.ops (timm picks with replacement); apply bool (N,) with P = cfg.prob;
    magnitude float32 (N,) ~ N(m, mstd) (or U(0, m) for mstd = inf) clipped to
    [0, mmax]; sign float32 (N,) of +-1, each with P = 0.5, for the ops that
    timm randomly negates.
    """
    op = torch.randint(len(cfg.ops), (batch,), generator=generator, device=generator.device)
    u = draw_rand((2, batch), generator)
    apply = u[0] <= cfg.prob  # timm skips the op when random() > prob
    sign = torch.where(u[1] > 0.5, -1.0, 1.0)  # timm negates when random() > 0.5
    if cfg.magnitude_std == float("inf"):
        magnitude = draw_rand((batch,), generator) * cfg.magnitude
    elif cfg.magnitude_std > 0:
        magnitude = cfg.magnitude + cfg.magnitude_std * draw_randn((batch,), generator)
    else:
        magnitude = torch.full((batch,), cfg.magnitude, device=generator.device)
    magnitude = magnitude.clamp(0.0, cfg.magnitude_max)
    return op, apply, magnitude, sign


def level_to_arg(name: str, magnitude: Tensor, sign: Tensor) -> Tensor:
    """timm's ``LEVEL_TO_ARG`` for one op name, per sample: float32 (N,).

    Computed in float64 like timm's Python floats, so that int() of e.g.
    0.7 * 110 lands on the same integer. Integer arguments (posterize bits,
    solarize thresholds) come back as integer-valued floats; ``int()`` of a
    non-negative float is floor.
    """
    level = magnitude.to(torch.float64) / _LEVEL_DENOM
    sign = sign.to(torch.float64)
    if name == "Rotate":
        arg = level * 30.0 * sign
    elif name == "Posterize":
        arg = torch.floor(level * 4)
    elif name == "PosterizeIncreasing":
        arg = 4 - torch.floor(level * 4)
    elif name == "Solarize":
        arg = torch.floor(level * 256).clamp(max=256)
    elif name == "SolarizeIncreasing":
        arg = 256 - torch.floor(level * 256).clamp(max=256)
    elif name == "SolarizeAdd":
        arg = torch.floor(level * 110).clamp(max=128)
    elif name in ("Color", "Contrast", "Brightness", "Sharpness"):
        arg = level * 1.8 + 0.1
    elif name in ("ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing"):
        arg = (1.0 + sign * (level * 0.9)).clamp(min=0.1)
    elif name in ("ShearX", "ShearY"):
        arg = level * 0.3 * sign
    elif name in ("TranslateXRel", "TranslateYRel"):
        arg = level * _TRANSLATE_PCT * sign
    elif name in ("AutoContrast", "Equalize", "Invert"):
        arg = torch.zeros_like(level)  # no argument
    else:
        raise ValueError(f"unknown RandAugment op {name!r}")
    return arg.to(torch.float32)


def affine_matrix(name: str, arg: Tensor, height: int, width: int) -> Tensor:
    if name == "Rotate":
        return rotate_matrix(arg, height, width)
    if name == "ShearX":
        return shear_x_matrix(arg)
    if name == "ShearY":
        return shear_y_matrix(arg)
    if name == "TranslateXRel":
        return translate_x_matrix(arg, width)
    if name == "TranslateYRel":
        return translate_y_matrix(arg, height)
    raise ValueError(name)


@dataclass
class LayerPlan:
    """One RandAugment layer planned on the host: which samples get which op.

    Each sample draws one op (or none). The value-mapping ops whose table
    depends only on the drawn argument are folded into one per-sample table
    ``lut`` here on the host; the others become groups of sample indices, so
    the device works only on the samples that drew them (a sixth of the batch
    draws a geometric op, a thirtieth sharpness) and never has to ask how
    many there are. All tensors are on the host until ``to_device``.

    * lut: float32 (N, 1, 256), the identity for samples without such an op;
      uses_lut says whether any sample has a non-identity table here or in
      ``stats`` (else the look-up is skipped).
    * stats: (index int64 (k,), factor float32 (k,)) of the samples whose
      table needs the image: first those that drew AutoContrast, then
      Equalize, then Contrast, as many as stats_counts says.
    * affine: cubic (bool) -> (index int64 (k,), matrix float64 (k, 2, 3)).
    * sharpness, color: (index int64 (k,), factor float32 (k,)) or None.
    """

    lut: Tensor
    uses_lut: bool
    stats: tuple[Tensor, Tensor]
    stats_counts: tuple[int, int, int]
    affine: dict[bool, tuple[Tensor, Tensor]]
    sharpness: tuple[Tensor, Tensor] | None
    color: tuple[Tensor, Tensor] | None

    def tensors(self, prefix: str) -> dict[str, Tensor]:
        """The host tensors, flattened under unique names (for to_device)."""
        out = {f"{prefix}.lut": self.lut}
        out[f"{prefix}.stats.index"], out[f"{prefix}.stats.factor"] = self.stats
        for cubic, (index, matrix) in self.affine.items():
            out[f"{prefix}.affine{int(cubic)}.index"], out[f"{prefix}.affine{int(cubic)}.matrix"] = index, matrix
        for name in ("sharpness", "color"):
            group = getattr(self, name)
            if group is not None:
                out[f"{prefix}.{name}.index"], out[f"{prefix}.{name}.factor"] = group
        return out

    def kinds(self) -> "LayerKinds":
        """What this plan holds, without its tensors."""
        return LayerKinds(self.uses_lut, self.stats_counts, tuple(self.affine), self.sharpness is not None,
                          self.color is not None)


@dataclass(frozen=True)
class LayerKinds:
    """A LayerPlan without its tensors (which travel packed, see
    GpuAugment.plan): which groups it holds, enough to rebuild the plan
    around the tensors' device copies. Plain Python values, cheap to send
    between processes."""

    uses_lut: bool
    stats_counts: tuple[int, int, int]
    affine: tuple[bool, ...]  # the interpolations (cubic or not) that have a group
    sharpness: bool
    color: bool

    def on(self, moved: dict[str, Tensor], prefix: str) -> LayerPlan:
        """The LayerPlan whose tensors are ``moved`` (LayerPlan.tensors' names)."""
        def pair(name):
            return moved[f"{prefix}.{name}.index"], moved[f"{prefix}.{name}.factor"]

        return LayerPlan(
            lut=moved[f"{prefix}.lut"],
            uses_lut=self.uses_lut,
            stats=pair("stats"),
            stats_counts=self.stats_counts,
            affine={c: (moved[f"{prefix}.affine{int(c)}.index"], moved[f"{prefix}.affine{int(c)}.matrix"])
                    for c in self.affine},
            sharpness=pair("sharpness") if self.sharpness else None,
            color=pair("color") if self.color else None,
        )


# The value-mapping ops whose table needs the image, in the order of stats_counts.
STATS_OPS = {"AutoContrast": 0, "Equalize": 1, "Contrast": 2, "ContrastIncreasing": 2}


def value_table(name: str, arg: Tensor) -> Tensor:
    """The look-up table (k, 1, 256) float32 of a value-mapping op whose table
    depends on its argument alone (not AutoContrast, Equalize, Contrast),
    for k samples' arguments arg (k,) (level_to_arg's)."""
    if name == "Invert":
        return invert_lut(arg.shape[0], arg.device)
    if name.startswith("Posterize"):
        return posterize_lut(arg)
    if name.startswith("SolarizeAdd"):
        return solarize_add_lut(arg)
    if name.startswith("Solarize"):
        return solarize_lut(arg)
    if name.startswith("Brightness"):
        return brightness_lut(arg)
    raise ValueError(f"{name!r} has no argument-only table")


def plan_rand_augment_layer(
    op: Tensor,
    apply: Tensor,
    magnitude: Tensor,
    sign: Tensor,
    ops: tuple[str, ...],
    height: int,
    width: int,
    channels: int,
    cubic: Tensor | bool = True,
) -> LayerPlan:
    """Turn one layer's draws (host tensors (N,), as sample_rand_augment_layer
    makes them) into a LayerPlan for images of ``channels`` x height x width.
    cubic: bool, or bool (N,) for a per-sample choice of bicubic/bilinear."""
    n = op.shape[0]
    if isinstance(cubic, bool):
        cubic = torch.full((n,), cubic, dtype=torch.bool)
    lut = lut_levels(n, op.device).clone()
    uses_lut = False
    stats: list[list[tuple[Tensor, Tensor]]] = [[], [], []]
    affine_parts: dict[bool, list[tuple[Tensor, Tensor]]] = {}
    sharpness_group = color_group = None
    # Group the samples by op with one sort (skipped samples last), rather
    # than a mask and a nonzero per op: planning is host time on every step.
    drawn = torch.where(apply, op, len(ops))
    order = torch.argsort(drawn, stable=True)
    counts = torch.bincount(drawn, minlength=len(ops) + 1).tolist()
    starts = [sum(counts[:k]) for k in range(len(ops))]
    for k, name in enumerate(ops):
        if counts[k] == 0:
            continue
        index = order[starts[k] : starts[k] + counts[k]]
        arg = level_to_arg(name, magnitude[index], sign[index])
        if name in STATS_OPS:
            stats[STATS_OPS[name]].append((index, arg))
            uses_lut = True
        elif name in LUT_OPS:
            lut[index] = value_table(name, arg)
            uses_lut = True
        elif name in AFFINE_OPS:
            matrix = affine_matrix(name, arg, height, width)
            for c in (True, False):
                pick = cubic[index] == c
                if bool(pick.any()):
                    affine_parts.setdefault(c, []).append((index[pick], matrix[pick]))
        elif name in COLOR_OPS:
            if channels > 1:  # colour is the identity on one grey channel
                color_group = (index, arg)
        elif name in SHARPNESS_OPS:
            sharpness_group = (index, arg)
        else:
            raise ValueError(f"unknown RandAugment op {name!r}")
    affine_groups = {c: (torch.cat([i for i, _ in parts]), torch.cat([m for _, m in parts]))
                     for c, parts in affine_parts.items()}
    groups = [group for kind in stats for group in kind]
    stats_group = ((torch.cat([i for i, _ in groups]), torch.cat([f for _, f in groups])) if groups
                   else (torch.zeros(0, dtype=torch.int64), torch.zeros(0)))
    stats_counts = tuple(sum(len(i) for i, _ in kind) for kind in stats)
    return LayerPlan(lut, uses_lut, stats_group, stats_counts, affine_groups, sharpness_group, color_group)


def _put(out: Tensor, source: Tensor, index: Tensor, values: Tensor) -> Tensor:
    """out with the samples at ``index`` replaced by ``values``; never writes
    into ``source`` (out starts as source when no op has written yet)."""
    if out is source:
        out = source.clone()
    return out.index_copy_(0, index, values)


def apply_rand_augment_layer(x: Tensor, plan: LayerPlan, fill: tuple[float, ...]) -> Tensor:
    """Apply a planned layer (its tensors on x's device) to x float32 (N, C, H, W)
    of integers in [0, 255]. Every op reads the layer's input x; each sample
    gets one op, so the groups write disjoint samples. No host sync: the
    group sizes are in the plan."""
    n, c = x.shape[:2]
    lut = plan.lut
    autocontrast, equalize, contrast = plan.stats_counts
    if autocontrast + equalize + contrast:
        index, factor = plan.stats
        part = x.index_select(0, index)
        tables = []
        if autocontrast + equalize:
            hist = channel_histogram(part[: autocontrast + equalize])
            if autocontrast:
                tables.append(auto_contrast_lut(hist[:autocontrast]))
            if equalize:
                tables.append(equalize_lut(hist[autocontrast:]))
        if contrast:  # blend with the mean of the L image
            last = autocontrast + equalize
            tables.append(contrast_lut(factor[last:], luma_mean(part[last:])).expand(-1, c, -1))
        lut = lut.expand(n, c, 256).clone()
        lut.index_copy_(0, index, tables[0] if len(tables) == 1 else torch.cat(tables))
    out = apply_lut(x, lut) if plan.uses_lut else x
    for cubic, (index, matrix) in plan.affine.items():
        out = _put(out, x, index, affine(x.index_select(0, index), matrix, fill, cubic))
    if plan.color is not None and c > 1:
        index, factor = plan.color
        out = _put(out, x, index, color(x.index_select(0, index), factor))
    if plan.sharpness is not None:
        index, factor = plan.sharpness
        out = _put(out, x, index, sharpness(x.index_select(0, index), factor))
    return out.clone() if out is x else out


def rand_augment_layer(
    x: Tensor,
    op: Tensor,
    apply: Tensor,
    magnitude: Tensor,
    sign: Tensor,
    ops: tuple[str, ...],
    fill: tuple[float, ...],
    cubic: Tensor | bool = True,
) -> Tensor:
    """Apply one RandAugment layer: sample n gets ``ops[op[n]]`` at ``magnitude[n]``
    if ``apply[n]``. x float32 (N, C, H, W) of integers in [0, 255]; the others (N,).

    The draws are brought to the host to plan the layer (a sync where they
    live on a GPU; GpuAugment draws them on the host in the first place).
    """
    n, c, h, w = x.shape
    host = [t.cpu() for t in (op, apply, magnitude, sign)]
    cubic = cubic.cpu() if isinstance(cubic, Tensor) else cubic
    plan = plan_rand_augment_layer(*host, ops, h, w, c, cubic)
    moved = to_device(plan.tensors("layer"), x.device)
    return apply_rand_augment_layer(x, plan.kinds().on(moved, "layer"), fill)
