"""Check a data set against its manifest: every shard present with its size,
sha256 and count, every sample decodable at the declared size, every label
where it belongs and every sample record where the manifest has it (a class
of one sample: its class record); optionally re-render some samples and
compare pixels."""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from typing import Any, Callable

import numpy as np

from . import encode, shards
from . import manifest as mf
from .errors import UserError
from .generators import get_kind
from .location import Location


def verify(location: Location, deep: int = 0, seed: int = 0, progress: Callable[[int], None] = lambda n: None,
           on_total: Callable[[int], None] = lambda n: None) -> tuple[dict[str, Any], list[str]]:
    """Returns (manifest, problems); no problems means the data set is intact.

    ``deep``: how many samples to re-render from the manifest (chosen with
    ``seed``) and compare pixel for pixel. ``progress`` is told how many
    samples each checked shard held; ``on_total`` first, how many there are
    to check (the shards' counts).
    """
    manifest = location.read_manifest()
    on_total(sum(s["count"] for s in manifest["shards"]))
    problems: list[str] = []
    width = manifest["layout"]["key_width"]
    size = manifest["image_size"]
    expected = _expected_records(manifest)
    labels: Counter[int] = Counter()
    problems += mf.disagreements(manifest)
    for shard in manifest["shards"]:
        problems += _check_shard(location, shard, width, size, expected, labels)
        progress(shard["count"])
    problems += _check_labels(manifest, labels)
    problems += _check_timm_info(location, manifest)
    if deep and not problems:
        problems += _deep_check(location, manifest, deep, seed)
    return manifest, problems


def _expected_records(manifest: dict) -> Callable[[int], tuple[int, dict | None]]:
    """index -> (the label the manifest gives sample ``index``, its whole
    record where the manifest holds it, else None)."""
    if "samples" in manifest:  # version 1: every record listed
        records = {r["index"]: r for r in manifest["samples"]}
        return lambda index: (records[index]["label"], records[index]) if index in records else (None, None)
    per_class, classes = manifest["samples_per_class"], manifest.get("classes")

    def expected(index: int) -> tuple[int, dict | None]:
        label = index // per_class
        if classes is None or not 0 <= label < len(classes):
            return label, None
        return label, {"index": index, "label": label, **classes[label]}

    return expected


def _check_shard(location: Location, shard: dict, width: int, size: int,
                 expected_records: Callable[[int], tuple[int, dict | None]], labels: Counter) -> list[str]:
    name = shard["file"]
    try:
        data = location.read_bytes(name)
    except FileNotFoundError:
        return [f"{name}: missing"]
    except OSError as error:
        return [f"{name}: cannot read ({error})"]
    problems = []
    if len(data) != shard["bytes"]:
        problems.append(f"{name}: {len(data)} bytes, manifest says {shard['bytes']}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != shard["sha256"]:
        problems.append(f"{name}: sha256 {digest[:12]}..., manifest says {shard['sha256'][:12]}...")
    expected = [shards.sample_key(i, width) for i in range(shard["first"], shard["first"] + shard["count"])]
    seen = []
    try:
        for sample in shards.read_shard(io.BytesIO(data)):
            seen.append(sample.key)
            labels[sample.label] += 1
            image = encode.decode_png(sample.png)
            if image.shape[:2] != (size, size):
                problems.append(f"{name}: sample {sample.key} is {image.shape[1]}x{image.shape[0]}, not {size}x{size}")
            label, record = expected_records(int(sample.key))
            if label is not None and label != sample.label:
                problems.append(f"{name}: sample {sample.key} has label {sample.label}, manifest says {label}")
            elif (sample.record.get("index"), sample.record.get("label")) != (int(sample.key), sample.label):
                problems.append(f"{name}: sample {sample.key}'s record says index {sample.record.get('index')}, "
                                f"label {sample.record.get('label')}")
            elif record is not None and sample.record != record:
                problems.append(f"{name}: sample {sample.key}'s record differs from the manifest's")
    except (ValueError, OSError) as error:
        problems.append(f"{name}: unreadable after {len(seen)} samples ({error})")
        return problems
    if seen != expected:
        problems.append(f"{name}: holds {len(seen)} samples {seen[:1]}..{seen[-1:]}, manifest says "
                        f"{shard['count']} from {expected[0]}")
    return problems


def _check_timm_info(location: Location, manifest: dict) -> list[str]:
    """``_info.json`` (what timm reads) is there and says what the manifest
    says: its recorded size and sha256 where the manifest has them, and its
    content either way."""
    name = mf.TIMM_INFO_NAME
    try:
        data = location.read_bytes(name)
    except FileNotFoundError:
        return [f"{name}: missing"]
    except OSError as error:
        return [f"{name}: cannot read ({error})"]
    recorded = manifest.get("timm_info")
    if recorded and (len(data), hashlib.sha256(data).hexdigest()) != (recorded["bytes"], recorded["sha256"]):
        return [f"{name}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:12]}..., manifest says "
                f"{recorded['bytes']} bytes, sha256 {recorded['sha256'][:12]}..."]
    try:
        same = json.loads(data) == mf.timm_info(manifest)
    except ValueError:
        same = False
    return [] if same else [f"{name}: does not describe the manifest's shards"]


def _check_labels(manifest: dict, labels: Counter) -> list[str]:
    num_classes, num_samples = manifest["num_classes"], manifest["num_samples"]
    problems = []
    outside = sorted(label for label in labels if not 0 <= label < num_classes)
    if outside:
        problems.append(f"labels outside 0..{num_classes - 1}: {outside[:5]}")
    missing = [c for c in range(num_classes) if labels[c] == 0]
    if missing:
        problems.append(f"{len(missing)} class(es) have no sample, e.g. {missing[:5]}")
    if num_samples % num_classes == 0:
        per_class = num_samples // num_classes
        uneven = [c for c in range(num_classes) if labels[c] not in (0, per_class)]
        if uneven:
            problems.append(f"{len(uneven)} class(es) do not hold exactly {per_class} sample(s), "
                            f"e.g. class {uneven[0]} holds {labels[uneven[0]]}")
    return problems


def _deep_check(location: Location, manifest: dict, count: int, seed: int) -> list[str]:
    """Re-render ``count`` samples from the manifest and compare pixels."""
    generator_cls = get_kind(manifest["kind"])
    try:
        params = generator_cls.make_params(manifest["params"])
    except UserError as error:
        return [f"manifest params: {error}"]
    generator = generator_cls(params, manifest["seed"], manifest["system"])
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(manifest["num_samples"], size=min(count, manifest["num_samples"]), replace=False))
    by_shard: dict[str, list[int]] = {}
    for index in chosen:
        shard = next(s for s in manifest["shards"] if s["first"] <= index < s["first"] + s["count"])
        by_shard.setdefault(shard["file"], []).append(int(index))
    problems = []
    for name, indices in by_shard.items():
        stored = {int(s.key): s for s in shards.read_shard(io.BytesIO(location.read_bytes(name)))}
        for index in indices:
            fresh = generator.render(index)
            image = encode.decode_png(stored[index].png)
            if not np.array_equal(image, fresh.image):
                differ = int(np.count_nonzero(image != fresh.image))
                problems.append(f"{name}: sample {index} differs from a fresh render in {differ} pixels")
    return problems
