"""Where a data set lives: a local directory or an object-store prefix
(``s3://bucket/prefix``, ``https://host/path``), read through fsspec so that
verify, info and the trainer use one code path for both."""

from __future__ import annotations

import posixpath
from typing import Any, BinaryIO

import fsspec

from . import manifest as mf
from .errors import UserError


def is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


class Location:
    """A data-set root. Names are file names relative to the root."""

    def __init__(self, url: str, **storage_options: Any):
        self.url = url.rstrip("/")
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.url, **storage_options)
        except (ImportError, ValueError) as error:
            raise UserError(f"cannot open {url}: {error}") from None

    def path(self, name: str) -> str:
        return posixpath.join(self.root, name) if is_remote(self.url) else f"{self.root}/{name}"

    def uri(self, name: str) -> str:
        return f"{self.url}/{name}"

    def exists(self, name: str) -> bool:
        return self.fs.exists(self.path(name))

    def size(self, name: str) -> int:
        return int(self.fs.size(self.path(name)))

    def open(self, name: str) -> BinaryIO:
        return self.fs.open(self.path(name), "rb")

    def read_bytes(self, name: str) -> bytes:
        with self.open(name) as handle:
            return handle.read()

    def read_manifest(self) -> dict[str, Any]:
        """The validated manifest; UserError when missing or invalid."""
        source = self.uri(mf.MANIFEST_NAME)
        try:
            text = self.read_bytes(mf.MANIFEST_NAME).decode("utf-8")
        except FileNotFoundError:
            raise UserError(f"no manifest at {source}: not a finished fracbuild data set") from None
        except (OSError, UnicodeDecodeError) as error:
            raise UserError(f"cannot read {source}: {error}") from None
        return mf.parse_manifest(text, source)
