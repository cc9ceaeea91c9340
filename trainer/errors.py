"""Error types the command line turns into one line and an exit code.

``UserError`` is fracbuild's: a bad option, file or state the user can fix
(``error: ...``, exit 2). ``TrainFailure`` is a run that started and could
not go on (a loss that became NaN): ``failed: ...``, exit 1.
"""

from fracbuild.errors import UserError, run_cli


class TrainFailure(Exception):
    """A run that started but cannot continue; its checkpoints stay resumable."""


__all__ = ["UserError", "TrainFailure", "run_cli"]
