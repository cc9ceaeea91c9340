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

Under torchrun the ranks of one node share one copy (``NodeGroup``): the
first creates a file in /dev/shm (or the temporary folder) of the decoded
set's size, each rank decodes its share of the shards into it, and every
rank maps the same pages: one copy per node instead of one per GPU, decoded
in a fraction of the time. The file is unlinked as soon as all have mapped it.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import numpy as np
from tqdm import tqdm

from fracbuild.encode import decode_png
from fracbuild.location import Location
from fracbuild.manifest import MANIFEST_NAME, disagreements, parse_manifest, sample_labels
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


@dataclass(frozen=True)
class NodeGroup:
    """The ranks of one node that load one shared copy of the data set.

    index: this rank's place in the group (torchrun's LOCAL_RANK); size: the
    group's size (LOCAL_WORLD_SIZE). Two collectives, called by every member
    in the same order: ``share(value)`` returns member 0's value on every
    member; ``any_failed(flag)`` returns True on every member if any passed
    True (it is also the barrier after decoding).
    """

    index: int
    size: int
    share: Callable[[Any], Any]
    any_failed: Callable[[bool], bool]


def read_manifest(url: str) -> tuple[Location, dict[str, Any], str]:
    """(location, validated manifest, sha256 of its bytes); UserError when
    missing or invalid."""
    if "://" not in url and not os.path.isdir(url):
        raise UserError(f"--shards {url} " + ("is not a directory" if os.path.exists(url) else "does not exist"))
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
    problems = disagreements(manifest)
    if problems:
        raise UserError(f"{source}: {problems[0].removeprefix('manifest: ')}")
    return location, manifest, hashlib.sha256(raw).hexdigest()


def load(url: str, *, threads: int = 8, log: Callable[[str], None] = lambda m: None,
         memory_limit: int | None = None, group: Optional[NodeGroup] = None, progress: bool = False) -> ShardDataset:
    """Read, verify and decode every shard of the data set at ``url``.

    threads: shards read and decoded concurrently (zlib and I/O release the GIL).
    memory_limit: bytes the decoded array may take in RAM before it falls
    back to a temporary file; default half the memory available.
    group: the ranks of this node, which then share one copy (see NodeGroup);
    every member must call load with the same url.
    progress: a bar of the images decoded (by this process) on stderr.
    """
    location, manifest, digest = read_manifest(url)
    n, size = manifest["num_samples"], manifest["image_size"]
    channels = probe_channels(location, manifest["shards"][0])
    shape = (n, size, size) if channels == 1 else (n, size, size, channels)
    nbytes = int(np.prod(shape))
    labels = sample_labels(manifest)
    started = time.monotonic()
    shards = manifest["shards"]
    images, how = None, ""
    if group is not None and group.size > 1:
        images = _load_shared(location, manifest, shape, digest, group, threads, log, progress)
        if images is not None:
            how = f", one copy shared by {group.size} ranks"
    if images is None:
        limit = memory_limit if memory_limit is not None else _host_memory() // 2
        if nbytes <= limit:
            images = np.empty(shape, dtype=np.uint8)
        else:
            log(f"decoded data set ({nbytes / 1e9:.1f} GB) exceeds the memory budget ({limit / 1e9:.1f} GB): "
                "keeping it in a temporary file")
            images = np.memmap(tempfile.TemporaryFile(), dtype=np.uint8, mode="w+", shape=shape)
        _decode_into(location, manifest, shards, images, threads, progress)
    log(f"decoded {n} images of {size}x{size} from {len(shards)} shard{'s' if len(shards) != 1 else ''} in "
        f"{time.monotonic() - started:.1f} s ({nbytes / 1e6:.0f} MB{how})")
    return ShardDataset(url=url, images=images, labels=labels, manifest=manifest, manifest_sha256=digest)


def _decode_into(location: Location, manifest: dict[str, Any], shards: list[dict[str, Any]], images: np.ndarray,
                 threads: int, progress: bool = False) -> None:
    """Verify and decode ``shards`` into their rows of ``images``."""
    expected = sample_labels(manifest)
    width = manifest["layout"]["key_width"]
    size = manifest["image_size"]
    channels = 1 if images.ndim == 3 else images.shape[3]

    def one(shard: dict[str, Any]) -> None:
        _load_shard(location, shard, images, expected, width, size, channels)

    pool = ThreadPoolExecutor(max_workers=max(1, threads))
    try:
        with tqdm(total=sum(s["count"] for s in shards), unit="img", desc="decoding", file=sys.stderr,
                  disable=not progress, mininterval=1.0, dynamic_ncols=True) as bar:
            counts = {pool.submit(one, shard): shard["count"] for shard in shards}
            for done in as_completed(counts):
                done.result()  # a bad shard's UserError, raised here
                bar.update(counts[done])
    finally:
        # On a bad shard or an interrupt, the shards not yet started are dropped.
        pool.shutdown(wait=True, cancel_futures=True)


def _load_shared(location: Location, manifest: dict[str, Any], shape: tuple[int, ...], digest: str,
                 group: NodeGroup, threads: int, log: Callable[[str], None],
                 progress: bool = False) -> Optional[np.ndarray]:
    """Decode into one file-backed copy shared by the group (each member its
    share of the shards); None on every member when member 0 found no room
    for it (each then loads its own copy)."""
    nbytes = int(np.prod(shape))
    path = None
    if group.index == 0:
        try:
            path = _create_shared_file(nbytes, digest)
        except OSError as error:
            log(f"cannot create a shared copy of the data set ({error}); each rank loads its own")
    path = group.share(path)
    if path is None:
        return None
    images, failure = None, None
    try:
        images = np.memmap(path, dtype=np.uint8, mode="r+", shape=shape)
        _decode_into(location, manifest, manifest["shards"][group.index :: group.size], images, threads,
                     progress and group.index == 0)
    except UserError as error:
        failure = str(error)
    except OSError as error:
        failure = f"cannot use the shared copy of the data set at {path}: {error}"
    failed = group.any_failed(failure is not None)  # every member has mapped the file by now
    if group.index == 0:
        try:
            os.unlink(path)  # the pages live on while mapped
        except OSError:
            pass
    if failed:
        raise UserError(failure or "another rank of this node could not load the data set (see its message)")
    return images


def _create_shared_file(nbytes: int, digest: str) -> Optional[str]:
    """A new file of ``nbytes`` reserved bytes in /dev/shm (memory) or else the
    temporary folder, whichever has the room; None when neither has. The space
    is reserved up front (posix_fallocate), so that a full tmpfs fails here
    rather than with SIGBUS at the first write into the mapping."""
    for folder in ("/dev/shm", tempfile.gettempdir()):
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            continue
        stats = os.statvfs(folder)
        if stats.f_bavail * stats.f_frsize < nbytes + (256 << 20):
            continue
        path = os.path.join(folder, f"fractrain-{digest[:16]}-{os.getpid()}.u8")
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.posix_fallocate(descriptor, 0, max(nbytes, 1))
        except OSError:
            os.close(descriptor)
            os.unlink(path)
            raise
        os.close(descriptor)
        return path
    return None


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


def checked_samples(location: Location, shard: dict[str, Any], labels: np.ndarray,
                    width: int) -> Iterator[tuple[int, bytes]]:
    """One shard's samples, read and checked: its size and sha256 against the
    manifest, then every sample of its range there once, under its zero-padded
    key, with the manifest's label. Yields (sample index, PNG bytes);
    UserError naming the shard at the first fault.

    labels: int64 (count,), the manifest's labels of the shard's samples in
    index order; width: the digits of a sample key."""
    where = location.uri(shard["file"])
    raw = read_verified(location, shard)
    first = shard["first"]
    wanted = range(first, first + shard["count"])
    seen: set[int] = set()
    try:
        for sample in read_shard(raw):
            index = int(sample.key)
            if index not in wanted or sample.key != f"{index:0{width}d}":
                raise UserError(f"shard {where} holds sample {sample.key!r} outside its range "
                                f"{wanted.start}..{wanted.stop - 1}")
            if index in seen:
                raise UserError(f"shard {where} holds sample {index} twice")
            if sample.label != labels[index - first]:
                raise UserError(f"shard {where}: sample {index} has label {sample.label}, the manifest says "
                                f"{labels[index - first]}")
            seen.add(index)
            yield index, sample.png
    except ValueError as error:  # a broken tar or sample record
        raise UserError(f"shard {where} is corrupt: {error}") from None
    if len(seen) != shard["count"]:
        raise UserError(f"shard {where} holds {len(seen)} samples, the manifest says {shard['count']}")


def _load_shard(location: Location, shard: dict[str, Any], images: np.ndarray, expected: np.ndarray,
                width: int, size: int, channels: int) -> None:
    """Decode one verified shard into its rows of ``images`` (checked_samples's checks, then each
    image's shape)."""
    where = location.uri(shard["file"])
    want = (size, size) if channels == 1 else (size, size, channels)
    labels = expected[shard["first"]:shard["first"] + shard["count"]]
    for index, png in checked_samples(location, shard, labels, width):
        try:
            pixels = decode_png(png)
        except (ValueError, OSError) as error:
            raise UserError(f"shard {where} is corrupt: {error}") from None
        if pixels.shape != want or pixels.dtype != np.uint8:
            raise UserError(f"shard {where}: sample {index} is {pixels.shape} {pixels.dtype}, "
                            f"expected {want} uint8")
        images[index] = pixels


def probe_channels(location: Location, shard: dict[str, Any]) -> int:
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


def _host_memory() -> int:
    """Bytes of host memory this process may use (resources.available_memory,
    imported here: it needs torch, which this module does not)."""
    import torch

    from .resources import available_memory

    return available_memory(torch.device("cpu"))
