"""``python -m fractrain``: the same as the ``fractrain`` command."""

from .cli import run

run()
