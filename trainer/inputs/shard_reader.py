"""One shard of the streaming input path, read and checked: run in reader
processes, so that parsing the tar (a few tens of microseconds of Python
per sample) never holds the training process's interpreter lock. This
module imports no torch, so that a reader process starts in a fraction of
a second."""

from __future__ import annotations

from typing import Any

import numpy as np

from fracbuild.location import Location

from .. import data

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
    return dict(data.checked_samples(location_for(url), shard, labels, width))
