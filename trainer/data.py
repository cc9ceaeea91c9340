"""A fracbuild data set -> verified shards -> decoded images in memory.

Every shard is read through ``fracbuild.location.Location`` (a local
directory and an ``s3://`` / ``https://`` prefix share this code path), its
size and sha256 are checked against the manifest, and its samples are
decoded once into one uint8 array ``(N, H, W)`` (grayscale) or
``(N, H, W, 3)`` (RGB) indexed by sample index. A missing, truncated or
corrupt shard stops the run with one line naming the file; no sample is
ever skipped. Transient read errors (``OSError`` from an object store) are
retried with exponential backoff.

The decoded set is ``N x H x W`` bytes (5.5 GB at N = 21,000 and 512 px). When
that does not fit in the memory available, the array is backed by an
anonymous temporary file instead (``numpy.memmap``) so that the page cache
holds what it can.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from fracbuild.encode import decode_png
from fracbuild.location import Location
from fracbuild.manifest import MANIFEST_NAME, parse_manifest
from fracbuild.shards import read_shard

from .errors import UserError



@dataclass
class ShardDataset:
    """A decoded fracbuild data set.

    images: uint8 (N, H, W) or (N, H, W, 3), row i = sample index i;
    labels: int64 (N,); manifest: the validated manifest;
    manifest_sha256: hex digest of the manifest's bytes (checkpoints record it).
    """

    url: str
    images: np.ndarray
    labels: np.ndarray
    manifest: dict[str, Any]
    manifest_sha256: str

    @property
    def num_samples(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.manifest["num_classes"])

    @property
    def image_size(self) -> int:
        return int(self.manifest["image_size"])


def read_manifest(url: str) -> tuple[Location, dict[str, Any], str]:
    """(location, validated manifest, sha256 of its bytes); UserError when
    missing or invalid."""
    location = Location(url)
    source = location.uri(MANIFEST_NAME)
    try:
        raw = _read(location, MANIFEST_NAME)
    except (FileNotFoundError, IsADirectoryError) as error:
        location.raise_user_error(error)  # a missing bucket, denied access: their own line
        raise UserError(f"no manifest at {source}: not a finished fracbuild data set") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"cannot read {source}: {error}") from None
    manifest = parse_manifest(text, source)
    if manifest["num_samples"] != len(manifest["samples"]):
        raise UserError(f"{source}: num_samples {manifest['num_samples']} but "
                        f"{len(manifest['samples'])} sample records")
    covered = sum(s["count"] for s in manifest["shards"])
    if covered != manifest["num_samples"]:
        raise UserError(f"{source}: shards hold {covered} samples, "
                        f"num_samples says {manifest['num_samples']}")
    return location, manifest, hashlib.sha256(raw).hexdigest()


def load(url: str, *, threads: int = 8, log: Callable[[str], None] = lambda m: None,
         memory_limit: int | None = None) -> ShardDataset:
    """Read, verify and decode every shard of the data set at ``url``.

    threads: shards read and decoded concurrently (zlib and I/O release the GIL).
    memory_limit: bytes the decoded array may take in RAM before it falls
    back to a temporary file; default half the memory available.
    """
    location, manifest, digest = read_manifest(url)
    n, size = manifest["num_samples"], manifest["image_size"]
    first = manifest["shards"][0]
    channels = _probe_channels(location, first)
    shape = (n, size, size) if channels == 1 else (n, size, size, channels)
    nbytes = int(np.prod(shape))
    limit = memory_limit if memory_limit is not None else _available_memory() // 2
    if nbytes <= limit:
        images = np.empty(shape, dtype=np.uint8)
    else:
        log(f"decoded data set ({nbytes / 1e9:.1f} GB) exceeds the memory budget ({limit / 1e9:.1f} GB): "
            "keeping it in a temporary file")
        images = np.memmap(tempfile.TemporaryFile(), dtype=np.uint8, mode="w+", shape=shape)
    labels = np.full(n, -1, dtype=np.int64)
    expected = {s["index"]: s["label"] for s in manifest["samples"]}
    width = manifest["layout"]["key_width"]

    started = time.monotonic()

    def one(shard: dict[str, Any]) -> None:
        _load_shard(location, shard, images, labels, expected, width, size, channels)

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for _ in pool.map(one, manifest["shards"]):
            pass
    missing = np.flatnonzero(labels < 0)
    if missing.size:
        raise UserError(f"{url}: no sample for index {int(missing[0])} in any shard ({missing.size} missing)")
    log(f"decoded {n} images of {size}x{size} from {len(manifest['shards'])} shards in "
        f"{time.monotonic() - started:.1f} s ({nbytes / 1e6:.0f} MB)")
    return ShardDataset(url=url, images=images, labels=labels, manifest=manifest, manifest_sha256=digest)


def read_verified(location: Location, shard: dict[str, Any]) -> bytes:
    """The bytes of one shard, checked against its manifest entry."""
    name = shard["file"]
    where = location.uri(name)
    try:
        data = _read(location, name)
    except FileNotFoundError:
        raise UserError(f"shard {where} is missing") from None
    if len(data) != shard["bytes"]:
        raise UserError(f"shard {where} is corrupt: {len(data)} bytes, the manifest says {shard['bytes']} "
                        "(truncated or replaced)")
    digest = hashlib.sha256(data).hexdigest()
    if digest != shard["sha256"]:
        raise UserError(f"shard {where} is corrupt: sha256 {digest[:12]}... does not match the manifest's "
                        f"{shard['sha256'][:12]}...")
    return data


def _load_shard(location: Location, shard: dict[str, Any], images: np.ndarray, labels: np.ndarray,
                expected: dict[int, int], width: int, size: int, channels: int) -> None:
    where = location.uri(shard["file"])
    data = read_verified(location, shard)
    wanted = range(shard["first"], shard["first"] + shard["count"])
    seen = 0
    try:
        for sample in read_shard(data):
            index = int(sample.key)
            if index not in wanted or sample.key != f"{index:0{width}d}":
                raise UserError(f"shard {where} holds sample {sample.key!r} outside its range "
                                f"{wanted.start}..{wanted.stop - 1}")
            if sample.label != expected.get(index):
                raise UserError(f"shard {where}: sample {index} has label {sample.label}, the manifest says "
                                f"{expected.get(index)}")
            pixels = decode_png(sample.png)
            want = (size, size) if channels == 1 else (size, size, channels)
            if pixels.shape != want or pixels.dtype != np.uint8:
                raise UserError(f"shard {where}: sample {index} is {pixels.shape} {pixels.dtype}, "
                                f"expected {want} uint8")
            images[index] = pixels
            labels[index] = sample.label
            seen += 1
    except (ValueError, OSError, json.JSONDecodeError) as error:
        raise UserError(f"shard {where} is corrupt: {error}") from None
    if seen != shard["count"]:
        raise UserError(f"shard {where} holds {seen} samples, the manifest says {shard['count']}")


def _probe_channels(location: Location, shard: dict[str, Any]) -> int:
    """1 for grayscale PNGs, 3 for RGB (from the first sample)."""
    data = read_verified(location, shard)
    try:
        sample = next(read_shard(data))
        pixels = decode_png(sample.png)
    except (StopIteration, ValueError, OSError) as error:
        raise UserError(f"shard {location.uri(shard['file'])} is corrupt: {error or 'empty'}") from None
    if pixels.ndim == 2:
        return 1
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        return 3
    raise UserError(f"shard {location.uri(shard['file'])}: images are {pixels.shape}; expected grayscale or RGB")


def _read(location: Location, name: str) -> bytes:
    """``location.read_bytes(name)``, which retries transient errors with
    backoff (fracbuild.location.retry); a missing file is raised as is and
    any other failure becomes one line naming the file."""
    try:
        return location.read_bytes(name)
    except (FileNotFoundError, IsADirectoryError):
        raise
    except Exception as error:  # remote stores raise their own types too
        location.raise_user_error(error)
        raise UserError(f"cannot read {location.uri(name)}: {error}") from None


def _available_memory() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 << 30
