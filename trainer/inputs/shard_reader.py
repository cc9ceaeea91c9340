"""One shard of the streaming input path, read and checked: run in reader
processes, so that parsing the tar (a few tens of microseconds of Python
per sample) never holds the training process's interpreter lock. This
module imports no torch, so that a reader process starts in a fraction of
a second."""

from __future__ import annotations

from typing import Any

import numpy as np

from fracbuild.location import Location
from fracbuild.shards import read_shard

from .. import data
from ..errors import UserError

_locations: dict[str, Location] = {}  # one per data set per process: s3 clients are costly to make


def location_for(url: str) -> Location:
    location = _locations.get(url)
    if location is None:
        location = _locations[url] = Location(url)
    return location


def read_samples(url: str, shard: dict[str, Any], labels: np.ndarray, width: int) -> dict[int, bytes]:
    """One shard of the data set at ``url``, read and checked (size and sha256
    against the manifest, then keys and labels) -> {sample index: PNG bytes}.

    labels: int64 (count,), the manifest's labels of the shard's samples."""
    location = location_for(url)
    where = location.uri(shard["file"])
    raw = data.read_verified(location, shard)
    first = shard["first"]
    wanted = range(first, first + shard["count"])
    found: dict[int, bytes] = {}
    try:
        for sample in read_shard(raw):
            index = int(sample.key)
            if index not in wanted or sample.key != f"{index:0{width}d}":
                raise UserError(f"shard {where} holds sample {sample.key!r} outside its range "
                                f"{wanted.start}..{wanted.stop - 1}")
            if index in found:
                raise UserError(f"shard {where} holds sample {index} twice")
            if sample.label != labels[index - first]:
                raise UserError(f"shard {where}: sample {index} has label {sample.label}, "
                                f"the manifest says {labels[index - first]}")
            found[index] = sample.png
    except ValueError as error:
        raise UserError(f"shard {where} is corrupt: {error}") from None
    if len(found) != shard["count"]:
        raise UserError(f"shard {where} holds {len(found)} samples, the manifest says {shard['count']}")
    return found
