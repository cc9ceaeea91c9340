"""Write a file so that it is either complete under its name or absent."""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import BinaryIO, Iterator

from .errors import UserError

PARTIAL_SUFFIX = ".partial"


@contextlib.contextmanager
def atomic_file(path: str) -> Iterator[BinaryIO]:
    """Yield a binary handle to ``path + PARTIAL_SUFFIX``; on success fsync it
    and rename it to ``path``, on any failure (a full disk, an interrupt)
    remove it. Readers therefore never see half a file under ``path``."""
    temporary = path + PARTIAL_SUFFIX
    try:
        with open(temporary, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def check_writable(path: str, what: str = "--out") -> None:
    """Raise UserError unless a file can be written at ``path`` (not a
    folder; its folder exists and takes a new file): asked before long work,
    not after it."""
    folder = os.path.dirname(os.path.abspath(path))
    shown = os.path.dirname(path) or folder
    if os.path.isdir(path):
        raise UserError(f"cannot write {what} {path}: it is a folder; give a file name inside it")
    if not os.path.exists(folder):
        raise UserError(f"cannot write {what} {path}: folder {shown} does not exist")
    if not os.path.isdir(folder):
        raise UserError(f"cannot write {what} {path}: {shown} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise UserError(f"cannot write {what} {path}: {error.strerror or error}") from None
