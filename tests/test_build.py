"""Builds end to end: determinism, the manifest, WebDataset and timm round trips."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from conftest import build_tiny
from fracbuild import manifest as mf
from fracbuild import perturb, render, seeds
from fracbuild.build import BuildSpec, run_build
from fracbuild.errors import BuildFailure
from fracbuild.generators import get_kind


def _shard_hashes(manifest):
    return [s["sha256"] for s in manifest["shards"]]


def test_same_seed_gives_byte_identical_shards(tmp_path, tiny_dataset):
    again = build_tiny(tmp_path / "again")
    original = mf.read_manifest(str(tiny_dataset))
    assert _shard_hashes(again) == _shard_hashes(original)
    for shard in original["shards"]:
        assert (tmp_path / "again" / shard["file"]).read_bytes() == (tiny_dataset / shard["file"]).read_bytes()


def test_another_seed_gives_other_shards(tmp_path, tiny_dataset):
    other = build_tiny(tmp_path / "other", seed=1)
    assert _shard_hashes(other) != _shard_hashes(mf.read_manifest(str(tiny_dataset)))


def test_pool_and_single_process_builds_agree(tmp_path, tiny_dataset):
    spec = BuildSpec(kind="1p-frac", seed=0, prefix="tiny", shard_size=6,
                     params={"num_classes": 16, "size": 64, "pad": 2, "iterations": 5000})
    pooled = run_build(spec, str(tmp_path / "pooled"), workers=2, progress=False, log=lambda m: None)
    assert _shard_hashes(pooled) == _shard_hashes(mf.read_manifest(str(tiny_dataset)))


def test_manifest_is_valid_and_complete(tiny_dataset):
    manifest = json.loads((tiny_dataset / "manifest.json").read_text())
    assert mf.validation_errors(manifest) == []
    assert manifest["num_classes"] == manifest["num_samples"] == 16
    assert manifest["schema_version"] == mf.SCHEMA_VERSION == 2 and "samples" not in manifest
    assert manifest["samples_per_class"] == 1 and len(manifest["classes"]) == 16  # a class is its one sample
    assert [s["count"] for s in manifest["shards"]] == [6, 6, 4]
    assert [s["classes"] for s in manifest["shards"]] == [[0, 5], [6, 11], [12, 15]]
    assert all(c["attempts"] >= 1 and c["fill_rate"] > 0.05 for c in manifest["classes"])
    assert set(manifest["streams"]) == {"search", "chaos", "class"}
    assert not (tiny_dataset / mf.BUILD_STATE_NAME).exists()
    assert not list(tiny_dataset.glob("*.partial"))


def test_schema_rejects_a_broken_manifest(tiny_dataset):
    manifest = json.loads((tiny_dataset / "manifest.json").read_text())
    del manifest["shards"][0]["sha256"]
    manifest["classes"][0].pop("epsilon")
    problems = mf.validation_errors(manifest)
    assert any("sha256" in p for p in problems) and any("epsilon" in p for p in problems)


def test_recorded_epsilons_reproduce_each_class(tiny_dataset):
    """The manifest alone (base maps, epsilon, streams) rebuilds each image."""
    manifest = mf.read_manifest(str(tiny_dataset))
    params = get_kind("1p-frac").make_params(manifest["params"])
    base = np.asarray(manifest["system"]["maps"])
    steps = render.map_sequence(seeds.rng(manifest["seed"], seeds.CHAOS).random(params.iterations),
                                np.asarray(manifest["system"]["probabilities"]))
    samples = {int(s["__key__"]): s for s in wds.WebDataset(
        [str(tiny_dataset / s["file"]) for s in manifest["shards"]], shardshuffle=False)}
    for index, record in enumerate(manifest["classes"][:5]):
        rng = seeds.rng(manifest["seed"], seeds.SAMPLE, index)
        for _ in range(record["attempts"]):  # replay the class's stream up to its accepted attempt
            epsilon = perturb.draw_epsilon(rng, params.perturbation, params.delta, base.shape)
            codes = render.draw_mask_codes(rng, params.iterations)
        assert np.allclose(epsilon, record["epsilon"], rtol=0, atol=0)
        image = render.render_ifs(perturb.apply_epsilon(base, epsilon, params.perturbation), steps,
                                  params.size, params.pad, codes)
        stored = np.asarray(Image.open(io.BytesIO(samples[index]["png"])))
        assert np.array_equal(image, stored)


def test_webdataset_reads_the_shards(tiny_dataset):
    manifest = mf.read_manifest(str(tiny_dataset))
    urls = [str(tiny_dataset / s["file"]) for s in manifest["shards"]]
    dataset = wds.WebDataset(urls, shardshuffle=False).decode("l8").to_tuple("__key__", "png", "cls", "json")
    seen = list(dataset)
    assert [key for key, *_ in seen] == [f"{i:06d}" for i in range(16)]
    for key, image, label, record in seen:
        assert image.shape == (64, 64) and image.dtype == np.uint8
        assert label == int(key) == record["label"]
    mode = Image.open(io.BytesIO(next(iter(wds.WebDataset(urls[:1], shardshuffle=False)))["png"])).mode
    assert mode == "L"  # grayscale, not three equal channels


def test_timm_reads_the_info_file(tiny_dataset):
    reader_wds = pytest.importorskip("timm.data.readers.reader_wds")
    info = reader_wds._load_info(str(tiny_dataset))
    split = reader_wds._parse_split_info("train", info)
    assert split.num_samples == 16
    assert list(split.filenames) == [f"tiny-{i:06d}.tar" for i in range(3)]


def test_a_class_that_never_passes_fails_with_a_clear_message(tmp_path, tiny_dataset):
    system = mf.read_manifest(str(tiny_dataset))["system"]
    spec = BuildSpec(kind="1p-frac", seed=0, prefix="tiny",
                     params={"num_classes": 4, "size": 64, "pad": 2, "iterations": 5000,
                             "threshold": 0.99, "max_attempts": 2})
    with pytest.raises(BuildFailure, match="class 0: no perturbation passed the fill check in 2 attempts"):
        run_build(spec, str(tmp_path / "out"), system=system, progress=False, log=lambda m: None)
    assert not list((tmp_path / "out").glob("*.tar*"))  # no shard, complete or partial


def test_search_that_finds_nothing_fails_before_writing(tmp_path):
    spec = BuildSpec(kind="1p-frac", seed=0, prefix="tiny",
                     params={"num_classes": 4, "size": 64, "pad": 2, "iterations": 2000,
                             "threshold": 0.99, "max_candidates": 3})
    with pytest.raises(BuildFailure, match="none of 3 base systems"):
        run_build(spec, str(tmp_path / "out"), progress=False, log=lambda m: None)
    assert not (tmp_path / "out").exists()
