"""Models: name aliases, timm's ``create_model``, loading a pre-trained
backbone without its head, and cutting a transformer after K blocks."""

from __future__ import annotations

import difflib
from typing import Any

import timm
import torch
from torch import nn

from .errors import UserError

ALIASES = {
    "vit_tiny": "vit_tiny_patch16_224",
    "vit_small": "vit_small_patch16_224",
    "vit_base": "vit_base_patch16_224",
    "vit_large": "vit_large_patch16_224",
}


def resolve_name(name: str) -> str:
    """An alias or timm model name -> the timm name; UserError with close matches."""
    name = name.strip()
    resolved = ALIASES.get(name, name)
    if timm.is_model(resolved.split(".")[0]):
        return resolved
    candidates = list(ALIASES) + timm.list_models()
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.6)
    hint = f"; close matches: {', '.join(close)}" if close else "; see timm.list_models() for the names"
    raise UserError(f"unknown model {name!r}{hint}")


def default_input_size(name: str) -> int:
    cfg = timm.models.get_pretrained_cfg(name.split(".")[0])
    size = getattr(cfg, "input_size", None) if cfg is not None else None
    return int(size[-1]) if size else 224


def create(name: str, num_classes: int, input_size: int, drop_path: float = 0.0,
           kwargs: dict[str, Any] | None = None) -> nn.Module:
    """A randomly initialised timm model for ``input_size`` square inputs.

    ``img_size`` is passed only when it differs from the architecture's
    default, so models without that argument (CNNs) still work at their
    default size.
    """
    extra = dict(kwargs or {})
    if input_size != default_input_size(name) and "img_size" not in extra:
        extra["img_size"] = input_size
    try:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, drop_path_rate=drop_path, **extra)
    except TypeError as error:
        raise UserError(f"cannot create {name} with {extra or 'default arguments'}: {error}") from None


def classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    """State-dict prefixes of the classification head(s)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier", "head")
    names = (names,) if isinstance(names, str) else tuple(names)
    return tuple(f"{n}." for n in names)


def load_backbone(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> list[str]:
    """Load pre-trained weights into ``model``, dropping the pre-training head
    (and resampling position embeddings when the input size differs).

    Returns the keys left at their fresh initialisation (the new head).
    UserError when the weights belong to another architecture.
    """
    heads = classifier_prefixes(model)
    state = {k: v for k, v in state.items() if not k.startswith(heads)}
    own = model.state_dict()
    pos = "pos_embed"
    if pos in state and pos in own and state[pos].shape != own[pos].shape:
        from timm.layers import resample_abs_pos_embed

        prefix = 0 if getattr(model, "no_embed_class", False) else getattr(model, "num_prefix_tokens", 1)
        grid = model.patch_embed.grid_size
        state[pos] = resample_abs_pos_embed(state[pos], new_size=list(grid), num_prefix_tokens=prefix)
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if mismatched:
        k = mismatched[0]
        raise UserError(f"{source} does not fit this model: {k} is {tuple(state[k].shape)} in the checkpoint, "
                        f"{tuple(own[k].shape)} here (another architecture?)")
    result = model.load_state_dict(state, strict=False)
    unexpected = list(result.unexpected_keys)
    missing = [k for k in result.missing_keys if not k.startswith(heads)]
    if unexpected or missing:
        k = (unexpected or missing)[0]
        raise UserError(f"{source} does not fit this model: {'unexpected' if unexpected else 'missing'} weight {k} "
                        "(another architecture?)")
    return list(result.missing_keys)


def blocks_of(model: nn.Module) -> nn.Sequential:
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, (nn.Sequential, nn.ModuleList)):
        raise UserError(f"{type(model).__name__} has no transformer blocks to cut (--blocks needs a ViT-like model)")
    return blocks


def cut_blocks(model: nn.Module, keep: int) -> nn.Module:
    """Keep the first ``keep`` transformer blocks (in place); returns model."""
    blocks = blocks_of(model)
    if not 1 <= keep <= len(blocks):
        raise UserError(f"--blocks must lie in 1..{len(blocks)} for this model, got {keep}")
    kept = list(blocks)[:keep]
    model.blocks = nn.Sequential(*kept) if isinstance(blocks, nn.Sequential) else nn.ModuleList(kept)
    return model
