"""Shared fixtures: small data sets built with fracbuild itself."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fracbuild.build import BuildSpec, run_build

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared"

# Small enough to build in about a second on one core.
TINY_PARAMS = {"num_classes": 16, "size": 64, "pad": 2, "iterations": 5000}


def build_tiny(out_dir: os.PathLike, seed: int = 0, shard_size: int = 6, **params) -> dict:
    """Build a tiny 1p-frac data set into ``out_dir``; returns its manifest."""
    spec = BuildSpec(kind="1p-frac", seed=seed, params={**TINY_PARAMS, **params}, prefix="tiny",
                     shard_size=shard_size)
    return run_build(spec, str(out_dir), workers=1, progress=False, log=lambda m: None)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A finished tiny data set (L = 16, 64x64, 3 shards). Do not modify it:
    copy it first (shutil.copytree) in tests that damage files."""
    out = tmp_path_factory.mktemp("tiny") / "shards"
    build_tiny(out)
    return out


@pytest.fixture
def one_torch_thread(monkeypatch):
    """Tiny tensors: on a small shared machine torch's threads only add
    contention (the trainer tests use it). OMP_NUM_THREADS tells the trainer
    to keep that one thread rather than choose its own count."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(threads)


def as_version_1(dataset: Path) -> dict:
    """Rewrite ``dataset``'s manifest.json the way version 1 wrote it (every
    sample's record, from the shards' json members, in ``samples``; no class
    records); returns it. Readers must still accept such manifests."""
    import json

    from fracbuild import manifest as mf
    from fracbuild import shards

    manifest = json.loads((dataset / mf.MANIFEST_NAME).read_text())
    records = [s.record for shard in manifest["shards"] for s in shards.read_shard(str(dataset / shard["file"]))]
    old = {"schema_version": 1}
    for key, value in manifest.items():
        if key in ("schema_version", "samples_per_class", "classes"):
            continue
        if key == "shards":
            old["samples"] = records
            value = [{k: v for k, v in shard.items() if k != "classes"} for shard in value]
        old[key] = value
    (dataset / mf.MANIFEST_NAME).write_text(mf.to_json_text(old))
    return old
