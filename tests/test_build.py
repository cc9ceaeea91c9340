"""Builds end to end: determinism, the manifest, WebDataset and timm round trips."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from conftest import as_version_1, build_tiny
from fracbuild import manifest as mf
from fracbuild import perturb, pool, remote_commit, render, seeds, shards
from fracbuild.build import BuildSpec, SampleTally, assemble, resolve, run_build
from fracbuild.errors import BuildFailure, UserError
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


def test_a_version_1_manifest_upgrades_to_what_a_build_writes(tmp_path, tiny_dataset):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_dataset, copy)
    old = as_version_1(copy)
    assert mf.validation_errors(old) == [] and len(old["samples"]) == 16
    assert mf.upgraded(old) == mf.read_manifest(str(tiny_dataset))
    assert mf.sample_labels(old).tolist() == mf.sample_labels(mf.upgraded(old)).tolist() == list(range(16))
    # publish takes a version 1 manifest of the same data set for the same data set
    assert remote_commit.content(old) == remote_commit.content(mf.read_manifest(str(tiny_dataset)))
    old["samples"][2]["label"] = 3
    with pytest.raises(UserError, match="class-major"):
        mf.upgraded(old)
    assert remote_commit.content(old) != remote_commit.content(mf.read_manifest(str(tiny_dataset)))


def _planned_manifest(kind: str, params: dict, shard_size: int) -> dict:
    """The manifest a build would write, through the build's own tally and
    assemble, without rendering (each sample's record: its index and label;
    stand-in shard sizes and digests)."""
    spec = BuildSpec(kind=kind, seed=0, params=params, prefix="p", shard_size=shard_size)
    generator_cls, params_obj = resolve(spec)
    system = generator_cls.prepare(params_obj, 0, lambda m: None)
    generator = generator_cls(params_obj, 0, system)
    n = generator.num_samples()
    tally = SampleTally(n // generator.num_classes())
    results = [tally.take(pool.ShardResult(plan, shards.shard_name("p", plan.index), 1 << 30, "f" * 64,
                                           [{"index": i, "label": i // tally.per_class}
                                            for i in range(plan.first, plan.first + plan.count)]))
               for plan in shards.plan_shards(n, shard_size)]
    return assemble(spec, generator, system, results, shards.key_width(n), tally,
                    {"search_seconds": 0.0, "render_seconds": 1.0, "rendered_samples": n, "workers": 1})


def test_a_million_sample_manifest_stays_small():
    manifest = _planned_manifest("rcdb", {"num_categories": 1000, "instances": 1000}, shard_size=1000)
    assert manifest["num_samples"] == 1_000_000 and mf.validation_errors(manifest) == []
    assert mf.disagreements(manifest) == []
    size = len(mf.to_json_text(manifest).encode("utf-8"))
    assert size < 2_000_000, size  # a record per sample alone would be ~30 MB


def test_the_manifest_does_not_grow_with_instances_per_class(tmp_path):
    """FractalDB with 2 and 8 instances per category: the same manifest but
    for the numbers that count samples and what describes the shards."""
    params = {"num_categories": 2, "repeats": 1, "size": 32, "pad": 2, "iterations": 1000, "search_size": 48,
              "search_iterations": 2000}
    built = [run_build(BuildSpec(kind="fractaldb", seed=0, params={**params, "instances": k}, prefix="f",
                                 shard_size=16), str(tmp_path / str(k)), progress=False, log=lambda m: None)
             for k in (2, 8)]
    for m in built:  # the search's duration is the run's, not the data set's
        del m["system"]["search_seconds"]
    fewer, more = ({key: value for key, value in m.items()
                    if key not in ("shards", "timings", "environment", "timm_info", "num_samples",
                                   "samples_per_class", "params")} for m in built)
    assert fewer == more and "classes" not in fewer
    assert [len(m["shards"]) for m in built] == [1, 1]
    assert [(m["num_samples"], m["samples_per_class"]) for m in built] == [(4, 2), (16, 8)]
    sizes = [len(mf.to_json_text({k: v for k, v in m.items() if k not in ("timings", "environment")}))
             for m in built]
    assert abs(sizes[0] - sizes[1]) <= 8, sizes  # digits of the counts, nothing per sample
