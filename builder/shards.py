"""WebDataset shards: naming, byte-reproducible writing, reading back.

A shard is the unit of work: one worker renders its samples, encodes them
and writes the whole tar under a temporary name, then renames it. A file
with a final shard name is therefore always complete.

Shards are written with the standard library's ``tarfile`` in the layout
WebDataset reads (``KEY.FIELD`` members, fields of a sample together, in
sorted order) rather than with ``webdataset.TarWriter``: importing
webdataset imports torch (about 3 s and 650 MB per worker process), which a
render worker does not otherwise need. Tests read the shards back with
webdataset itself.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from .atomic import atomic_file

# Fixed tar metadata so that two builds produce the same bytes.
TAR_MTIME = 0
TAR_OWNER = "fracbuild"
TAR_MODE = 0o444
DEFAULT_SHARD_SIZE = 256


def shard_name(prefix: str, index: int) -> str:
    """``PREFIX-%06d.tar``: the one place shard file names are made."""
    return f"{prefix}-{index:06d}.tar"


def shard_pattern(prefix: str) -> re.Pattern:
    return re.compile(re.escape(prefix) + r"-(\d{6})\.tar$")


def key_width(num_samples: int) -> int:
    """Digits of a sample key: at least 6, enough for the largest index."""
    return max(6, len(str(max(num_samples - 1, 0))))


def sample_key(index: int, width: int) -> str:
    return f"{index:0{width}d}"


@dataclass(frozen=True)
class ShardPlan:
    """Shard ``index`` holds samples ``first .. first + count - 1``."""

    index: int
    first: int
    count: int


def plan_shards(num_samples: int, shard_size: int) -> list[ShardPlan]:
    return [ShardPlan(i, first, min(shard_size, num_samples - first))
            for i, first in enumerate(range(0, num_samples, shard_size))]


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class EncodedSample:
    """What goes into the tar for one sample (all fields already bytes-ready)."""

    key: str
    png: bytes
    label: int
    record: dict[str, Any]


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = TAR_MTIME
    info.mode = TAR_MODE
    info.uname = info.gname = TAR_OWNER
    info.uid = info.gid = 0
    tar.addfile(info, io.BytesIO(data))


def sample_fields(sample: EncodedSample) -> dict[str, bytes]:
    """The tar members of one sample, field -> bytes."""
    if "." in sample.key:
        raise ValueError(f"sample key {sample.key!r} contains a dot (WebDataset splits keys at dots)")
    return {
        "cls": str(sample.label).encode("ascii"),
        "json": json.dumps(sample.record, sort_keys=True, separators=(",", ":")).encode("utf-8"),
        "png": sample.png,
    }


def write_shard(path: str, samples: Iterable[EncodedSample]) -> None:
    """Write samples to ``path + ".partial"``, fsync, then rename to ``path``.

    Member metadata is fixed (mtime 0, owner, mode, order), so the same
    samples always give the same bytes. The temporary file is removed if
    anything fails, so a crash or a full disk leaves no half-written shard
    behind under either name.
    """
    with atomic_file(path) as handle:
        with tarfile.open(fileobj=handle, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for sample in samples:
                for field, data in sorted(sample_fields(sample).items()):
                    _add_member(tar, f"{sample.key}.{field}", data)


@dataclass
class ReadSample:
    key: str
    png: bytes
    label: int
    record: dict[str, Any]


def read_samples(fileobj_or_path: Any) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Every sample of a WebDataset tar (a fracbuild shard or any other), in
    order, as (key, field -> bytes), with the standard library's tarfile and
    WebDataset's rules: regular files only; a member's key is its path up to
    the first dot of its file name, its field the rest, lower-cased; a sample
    is a run of consecutive members with one key. No decoding. Raises
    ``ValueError`` on a malformed tar or a field given twice in one sample."""
    if isinstance(fileobj_or_path, (bytes, bytearray)):
        fileobj_or_path = io.BytesIO(fileobj_or_path)
    try:
        with (tarfile.open(fileobj_or_path, "r:") if isinstance(fileobj_or_path, str)
              else tarfile.open(fileobj=fileobj_or_path, mode="r:")) as tar:
            current: dict[str, bytes] = {}
            current_key = None
            for member in tar:
                if not member.isfile():
                    continue
                folder, _, name = member.name.rpartition("/")
                stem, _, field = name.partition(".")
                key, field = f"{folder}/{stem}" if folder else stem, field.lower()
                if current_key is not None and key != current_key:
                    yield current_key, current
                    current = {}
                if field in current:
                    raise ValueError(f"sample {key} has two {field} fields")
                current_key = key
                current[field] = tar.extractfile(member).read()
            if current_key is not None:
                yield current_key, current
    except tarfile.TarError as error:
        raise ValueError(f"not a valid tar: {error}") from None


def read_shard(fileobj_or_path: Any) -> Iterator[ReadSample]:
    """Read a fracbuild shard back sample by sample, in order (see
    :func:`read_samples`). Raises ``ValueError`` on a malformed tar or a
    sample missing a field."""
    for key, fields in read_samples(fileobj_or_path):
        yield _to_sample(key, fields)


def _to_sample(key: str, fields: dict[str, bytes]) -> ReadSample:
    missing = {"png", "cls", "json"} - set(fields)
    if missing:
        raise ValueError(f"sample {key} lacks field(s) {', '.join(sorted(missing))}")
    return ReadSample(key=key, png=fields["png"], label=int(fields["cls"]), record=json.loads(fields["json"]))
