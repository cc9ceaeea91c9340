"""An advisory lock on a data-set folder, held for as long as one command
writes it (``render``) or reads it to upload (``publish``).

A second command on the same folder fails at once, naming the process that
holds it, instead of colliding with the first one's temporary files. The
lock is ``fcntl.flock`` on ``LOCK_NAME`` inside the folder: the kernel
releases it when the holder dies, however it dies, so a stale lock file
never blocks a ``--resume``. Forked render workers inherit the open lock, so
the folder stays locked while any of them still runs.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from typing import Iterator

from .errors import UserError

LOCK_NAME = ".fracbuild.lock"
# How long a busy lock is asked again before giving up, seconds: a killed
# build's workers take a few milliseconds to exit and release it, and a
# --resume started right after the kill must not trip over them.
BUSY_GRACE = 2.0
BUSY_POLL = 0.05

# The folder cannot be written at all: nothing else can write it either.
_UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def _holder(path: str) -> str:
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip() or "unknown"
    except (OSError, ValueError):
        return "unknown"


def _acquire(folder: str, path: str) -> int:
    """An open descriptor holding the lock on ``path``."""
    deadline = time.monotonic() + BUSY_GRACE
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            if time.monotonic() < deadline:
                time.sleep(BUSY_POLL)
                continue
            raise UserError(f"another fracbuild is writing to {folder} (pid {_holder(path)})") from None
        # The holder before us may have removed the file between our open and
        # our flock: then we hold a lock on a name nobody else sees. Try again.
        try:
            same = os.stat(path).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(descriptor)
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"{os.getpid()}\n".encode("ascii"))
    return descriptor


@contextlib.contextmanager
def hold(folder: str, *, create: bool = True, what: str = "--out") -> Iterator[None]:
    """Hold the lock on ``folder`` for the body of the ``with``.

    ``create``: make the folder if it is missing (it is removed again on the
    way out if it is still empty). Without ``create`` a folder that cannot
    be written is used unlocked: nothing can write it while we read.
    Raises UserError when another process holds the lock, or when ``folder``
    cannot be created or written and ``create`` is set.
    """
    created = False
    if create and not os.path.isdir(folder):
        if os.path.exists(folder):
            raise UserError(f"{what} {folder} exists and is not a directory")
        try:
            os.makedirs(folder)
        except OSError as error:
            raise UserError(f"cannot create {what} {folder}: {error.strerror or error}") from None
        created = True
    path = os.path.join(folder, LOCK_NAME)
    try:
        descriptor: int | None = _acquire(folder, path)
    except OSError as error:
        if create or error.errno not in _UNWRITABLE:
            _remove_if_empty(folder, created)
            raise UserError(f"cannot write to {what} {folder}: {error.strerror or error}") from None
        descriptor = None
    try:
        yield
    finally:
        if descriptor is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)
            os.close(descriptor)
        _remove_if_empty(folder, created)


def _remove_if_empty(folder: str, created: bool) -> None:
    """A folder this command created and left empty goes again: a failed
    command leaves nothing behind."""
    if created:
        with contextlib.suppress(OSError):
            os.rmdir(folder)
