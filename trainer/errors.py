"""Error types the command line turns into one line and an exit code.

``UserError`` is fracbuild's: a bad option, file or state the user can fix
(``error: ...``, exit 2). ``TrainFailure`` is a run that started and could
not go on (a loss that became NaN): ``failed: ...``, exit 1.
"""

from fracbuild.errors import UserError, run_cli


class TrainFailure(Exception):
    """A run that started but cannot continue; its checkpoints stay resumable."""


class ResumeMismatch(UserError):
    """A checkpoint made with another value of a setting (``key``: its dotted
    name in config.yaml); the command line names the flag instead."""

    def __init__(self, path: str, key: str, was: object, now: object, more: int = 0):
        self.path, self.key, self.was, self.now, self.more = path, key, was, now, more
        super().__init__(self.naming(key))

    def naming(self, name: str) -> str:
        others = f" (and {self.more} more)" if self.more else ""
        return (f"cannot resume from {self.path}: it was made with {name} {self.was!r}, this run asks "
                f"{self.now!r}{others}; resume with the same options (--config <run>/config.yaml)")


__all__ = ["UserError", "TrainFailure", "ResumeMismatch", "run_cli"]
