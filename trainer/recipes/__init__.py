"""Named recipes: ``NAME.yaml`` files in this package, each a partial
configuration nested like a run's ``config.yaml`` (with its ``command``).
``fractrain --recipe NAME`` starts from one; see config.recipe_defaults."""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

from ..errors import UserError

# The recipe each command starts from on the command line when --recipe is
# not given (probe has none: the released code has no linear probe).
DEFAULT = {"pretrain": "paper", "finetune": "paper-finetune", "probe": None}


def names() -> list[str]:
    """Every shipped recipe name, sorted."""
    return sorted(entry.name[:-5] for entry in resources.files(__package__).iterdir()
                  if entry.name.endswith(".yaml"))


def load(name: str) -> dict[str, Any]:
    """The recipe's mapping (with its ``command``); UserError for an unknown name."""
    if name not in names():
        raise UserError(f"unknown recipe {name!r}; choose from {', '.join(names())}")
    text = resources.files(__package__).joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    payload = yaml.safe_load(text)
    assert isinstance(payload, dict) and "command" in payload, f"recipe {name} lacks its command"
    return payload
