"""``python -m fractrain``: the same as the ``fractrain`` command."""

from .entry import run

run()
