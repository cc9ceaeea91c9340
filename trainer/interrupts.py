"""Interrupts that keep the work: SIGINT (Ctrl-C) and SIGTERM (how clusters
and schedulers preempt a job) are turned into a request that the training
loop honours after the step in progress, by writing a checkpoint and
telling the user how to continue.

Outside the loop (while the data decodes, say) SIGTERM raises
:class:`Interrupted` like Ctrl-C raises KeyboardInterrupt, so the command
line ends with one line and exit code 128 + signal instead of dying silently.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import threading
from typing import Iterator

from fracbuild import errors

HANDLED = (signal.SIGINT, signal.SIGTERM)

# The command the user typed (argv without the program), for the resume hint;
# the command line sets it, sys.argv is the fallback.
_command: list[str] | None = None


class Interrupted(errors.Interrupted):
    """The run stopped on a signal after saving what it could; ``message``
    says how to continue, ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int, message: str):
        super().__init__(message, 128 + signum)
        self.signum = signum


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def set_command(argv: list[str] | None) -> None:
    global _command
    _command = list(argv) if argv is not None else None


def resume_command(out: str) -> str:
    """The user's command with ``--resume auto`` (replacing any --resume) and
    ``--out`` spelled out, quoted for a POSIX shell."""
    args = list(_command if _command is not None else sys.argv[1:])
    kept: list[str] = []
    skip = False
    has_out = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg == "--resume":
            skip = True
            continue
        if arg.startswith("--resume="):
            continue
        if arg == "--out" or arg.startswith("--out="):
            has_out = True
        kept.append(arg)
    if not has_out:
        kept += ["--out", out]
    return shlex.join(["fractrain", *kept, "--resume", "auto"])


class StopRequest:
    """The first SIGINT/SIGTERM received while installed (``signum``); a
    second SIGINT raises KeyboardInterrupt at once, for a user who does not
    want to wait for the step to finish."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def _handle(self, signum: int, frame) -> None:  # noqa: ARG002 - signal's signature
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signum is None:
            self.signum = signum


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def deferred() -> Iterator[StopRequest]:
    """Within the block SIGINT and SIGTERM only set ``request.signum``.
    (Signal handlers can only be set from the main thread; elsewhere the
    request never fires.)"""
    request = StopRequest()
    if not _in_main_thread():
        yield request
        return
    previous = {s: signal.getsignal(s) for s in HANDLED}
    for s in HANDLED:
        signal.signal(s, request._handle)
    try:
        yield request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _raise_terminated(signum: int, frame) -> None:  # noqa: ARG001
    raise Interrupted(signum, f"interrupted ({signal_name(signum)}) outside the training steps: no new checkpoint; "
                              "--resume auto continues from the last one, if the run has any")


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block SIGTERM raises :class:`Interrupted` (main thread only)."""
    if not _in_main_thread() or os.name != "posix":
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def ignore_in_worker(worker_id: int = 0) -> None:  # noqa: ARG001 - DataLoader's worker_init_fn signature
    """DataLoader worker start: Ctrl-C reaches the whole process group, but
    only the training process decides when to stop (after a checkpoint); a
    worker that died on it would fail the batch the last step still needs.
    Workers still end with the training process (torch watches the parent)."""
    for s in HANDLED:
        signal.signal(s, signal.SIG_IGN)
