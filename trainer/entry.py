"""The ``fractrain`` console script. It checks that the trainer's extra
packages are installed before it loads the command line, so that a
builder-only install (``pip install onepfrac``) gets one line telling what
to install instead of a ``ModuleNotFoundError`` traceback."""

from __future__ import annotations

import importlib.util
import sys

# Top-level modules of the ``train`` extra (pyproject.toml) that fractrain imports.
TRAINER_MODULES = ("torch", "torchvision", "timm", "yaml")
INSTALL_HINT = 'pip install "onepfrac[train]"'


def missing_trainer_modules() -> list[str]:
    """Names in TRAINER_MODULES that cannot be imported here."""
    missing = []
    for name in TRAINER_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a broken or half-removed package
            found = False
        if not found:
            missing.append(name)
    return missing


def run() -> None:
    """Console-script entry point: exit 2 with one line when the trainer
    extra is missing, else run the CLI."""
    missing = missing_trainer_modules()
    if missing:
        print(f"error: fractrain needs the trainer extra, which is not installed (no {', '.join(missing)}): "
              f"{INSTALL_HINT}", file=sys.stderr)
        sys.exit(2)
    from .cli import run as run_cli

    run_cli()
