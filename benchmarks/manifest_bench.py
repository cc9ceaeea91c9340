"""manifest.json's size and load time against the number of samples, in the
layout that lists every sample (schema version 1) and in the current one
(per class and per shard, schema version 2).

A FractalDB-style set of 1,000 searched categories with 1, 10, 100 and 1,000
instances each (1k to 1M samples), planned but not rendered: the category
search runs for real (at a small search size, so it takes seconds; the system
record has the shape of a full one: every category's maps), each sample's
record is what ``FractalDB.render`` returns for it (weight row, repeat, flip:
from the index), and the manifest is made by the build's own tally and
``assemble``. Shard sizes and digests are stand-ins of the right length.
The version 1 manifest is the same data set with its ``samples`` list.

Load time: ``fracbuild.manifest.read_manifest`` (read, parse, validate
against the schema), the median of ``--repeats`` runs per file.

    python benchmarks/manifest_bench.py                      # 1k .. 1M samples
    python benchmarks/manifest_bench.py --instances 1,10 --repeats 5

Prints a markdown table on stderr and one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time

from fracbuild import manifest as mf
from fracbuild import pool, shards
from fracbuild.build import BuildSpec, SampleTally, assemble, resolve

SEARCH = {"num_categories": 1000, "search_size": 64, "search_iterations": 3000, "size": 64}


def planned(instances: int, system: dict | None) -> tuple[dict, list[dict], dict]:
    """(version 2 manifest, every sample's record, system) of the FractalDB
    plan with ``instances`` per category, without rendering."""
    spec = BuildSpec(kind="fractaldb", seed=0, params={**SEARCH, "instances": instances}, prefix="fractaldb")
    generator_cls, params = resolve(spec)
    if system is None:
        system = generator_cls.prepare(params, spec.seed, lambda m: None, workers=1)
    generator = generator_cls(params, spec.seed, system)
    n = generator.num_samples()
    tally = SampleTally(n // generator.num_classes())
    records, results = [], []
    for plan in shards.plan_shards(n, spec.shard_size):
        samples = []
        for index in range(plan.first, plan.first + plan.count):
            category, row, repeat, view = generator.instance(index)
            samples.append(pool.sample_record(index, category, {"weight_row": row, "repeat": repeat, "flip": view}))
        records += samples
        digest = hashlib.sha256(str(plan.index).encode()).hexdigest()
        results.append(tally.take(pool.ShardResult(plan, shards.shard_name(spec.prefix, plan.index),
                                                   plan.count * 20_000, digest, samples)))
    manifest = assemble(spec, generator, system, results, shards.key_width(n), tally,
                        {"search_seconds": 0.0, "render_seconds": 1.0, "rendered_samples": n, "workers": 1})
    return manifest, records, system


def as_listing_every_sample(manifest: dict, records: list[dict]) -> dict:
    """The same data set in the version 1 layout: every record in ``samples``."""
    old: dict = {}
    for key, value in manifest.items():
        if key in ("samples_per_class", "classes"):
            continue
        if key == "schema_version":
            value = 1
        if key == "shards":
            old["samples"] = records
            value = [{k: v for k, v in shard.items() if k != "classes"} for shard in value]
        old[key] = value
    return old


def load_seconds(path: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        mf.read_manifest(path)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", default="1,10,100,1000",
                        help="comma-separated instances per category, 1,000 categories (default: 1,10,100,1000)")
    parser.add_argument("--repeats", type=int, default=3, help="loads per file; the median is reported (default: 3)")
    args = parser.parse_args(argv)
    rows, system = [], None
    with tempfile.TemporaryDirectory() as folder:
        for instances in (int(k) for k in args.instances.split(",")):
            manifest, records, system = planned(instances, system)
            row = {"instances": instances, "samples": manifest["num_samples"], "shards": len(manifest["shards"])}
            for name, payload in (("v1", as_listing_every_sample(manifest, records)), ("v2", manifest)):
                path = os.path.join(folder, f"{name}-{instances}.json")
                with open(path, "w", encoding="utf-8") as handle:
                    handle.write(mf.to_json_text(payload))
                row[f"{name}_bytes"] = os.path.getsize(path)
                row[f"{name}_load_s"] = load_seconds(path, args.repeats)
                os.remove(path)
            rows.append(row)
            print(f"{row['samples']} samples done", file=sys.stderr)
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs (shared), Python {platform.python_version()}; "
          f"load = read_manifest (parse + schema), median of {args.repeats}\n", file=sys.stderr)
    print("| samples | shards | v1 (every sample) | v1 load | v2 (classes + shards) | v2 load | size v1/v2 |\n"
          "|---:|---:|---:|---:|---:|---:|---:|", file=sys.stderr)
    for r in rows:
        print(f"| {r['samples']:,} | {r['shards']:,} | {r['v1_bytes'] / 1e6:.2f} MB | {r['v1_load_s']:.3f} s "
              f"| {r['v2_bytes'] / 1e6:.2f} MB | {r['v2_load_s']:.3f} s | {r['v1_bytes'] / r['v2_bytes']:.1f} |",
              file=sys.stderr)
    print(json.dumps({"rows": rows, "repeats": args.repeats, "search": SEARCH}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
