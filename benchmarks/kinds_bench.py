"""Kinds benchmark: images/s of every kind at its default settings, render
plus PNG encode on one core (medians of repeated runs, all kinds in the
same run so they can be compared), optionally an end-to-end build through
the worker pool, and FractalDB's category search rate.

    python benchmarks/kinds_bench.py                       # every kind, one core
    python benchmarks/kinds_bench.py --build --workers 2   # plus run_build through the pool
    python benchmarks/kinds_bench.py --kinds rcdb,noise --samples 32

Prints a markdown table on stderr and one JSON line on stdout. The machines
this runs on are shared: quote medians and rerun a surprising figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

from fracbuild import encode
from fracbuild.build import BuildSpec, run_build
from fracbuild.generators import get_kind
from fracbuild.generators.fractaldb import search as fractaldb_search

# Per kind: parameters (the kind's defaults except how many categories the
# benchmark needs) and which sample indices one run renders, given a count.
# Contour categories vary a lot in cost (1..200 contours), so the indices
# spread over many categories; FractalDB's run over consecutive samples, as a
# worker renders a shard (the 4 flips of a render are rendered once).
KINDS = {
    "1p-frac": ({"num_classes": 64}, lambda n: range(n)),
    "fractaldb": ({"num_categories": 2}, lambda n: range(n)),
    "ofdb": ({"num_categories": 8}, lambda n: [i % 8 for i in range(n)]),
    "rcdb": ({"num_categories": 64, "instances": 1000}, lambda n: [(i % 64) * 1000 + i // 64 for i in range(n)]),
    "visualatom": ({"num_categories": 64, "instances": 1000},
                   lambda n: [(i % 64) * 1000 + i // 64 for i in range(n)]),
    "rcdb --lpce": ({"lpce": True, "num_classes": 1000}, lambda n: range(n)),
    "visualatom --lpce": ({"lpce": True, "num_classes": 1000}, lambda n: range(n)),
    "noise": ({"num_classes": 1000}, lambda n: range(n)),
    "real-image": ({"num_classes": 1000}, lambda n: range(n)),
    "real-image --edges none": ({"num_classes": 1000, "edges": "none"}, lambda n: range(n)),
}


def kind_of(name: str) -> str:
    return name.split(" ")[0]


def make_generator(name: str):
    cls = get_kind(kind_of(name))
    params = cls.make_params(KINDS[name][0])
    started = time.perf_counter()
    system = cls.prepare(params, 0, lambda m: None)
    return cls(params, 0, system), time.perf_counter() - started


def one_core_rate(generator, indices: list[int], repeats: int) -> dict:
    """Median images/s of render + encode over ``indices``, and the render share."""
    totals, renders = [], []
    for _ in range(repeats):
        generator = type(generator)(generator.params, generator.seed, generator.system)  # cold caches
        render_s = encode_s = 0.0
        for index in indices:
            started = time.perf_counter()
            sample = generator.render(index)
            middle = time.perf_counter()
            encode.encode_png(sample.image)
            encode_s += time.perf_counter() - middle
            render_s += middle - started
        totals.append(len(indices) / (render_s + encode_s))
        renders.append(render_s / (render_s + encode_s))
    return {"images_per_s": statistics.median(totals), "render_share": statistics.median(renders),
            "spread": [min(totals), max(totals)]}


def build_rate(name: str, samples: int, workers: int) -> float:
    """End-to-end images/s of a build (pool, PNG, tar, sha256) of ``samples``."""
    kind = kind_of(name)
    params = dict(KINDS[name][0])
    if kind in ("rcdb", "visualatom") and not params.get("lpce"):  # the one-core run's 64 categories
        params.update(num_categories=64, instances=max(1, samples // 64))
    elif kind == "fractaldb":
        params.update(num_categories=1, instances=min(samples, 1000))
    elif kind == "ofdb":
        params.update(num_categories=samples)
    else:
        params["num_classes"] = samples
    with tempfile.TemporaryDirectory() as folder:
        manifest = run_build(BuildSpec(kind=kind, seed=0, params=params, prefix="bench", shard_size=64),
                             folder, workers=workers, progress=False, log=lambda m: None)
    return manifest["timings"]["samples_per_second"]


def search_rate(categories: int, threads: int) -> dict:
    started = time.perf_counter()
    found = fractaldb_search.search(categories, stream="seeded", seed=0, iterations=100_000, size=512, pad=6,
                                    threshold=0.2, max_candidates=10**7, log=lambda m: None, threads=threads)
    seconds = time.perf_counter() - started
    return {"categories": categories, "candidates": found["candidates_tried"], "seconds": seconds,
            "candidates_per_s": found["candidates_tried"] / seconds, "categories_per_s": categories / seconds,
            "threads": threads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated names from: " + ", ".join(KINDS))
    parser.add_argument("--samples", type=int, default=64, help="images per one-core run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per kind (the median is reported)")
    parser.add_argument("--build", action="store_true", help="also time run_build through the pool")
    parser.add_argument("--build-samples", type=int, default=256)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--search-categories", type=int, default=20,
                        help="FractalDB categories to search at the released settings (0: skip)")
    args = parser.parse_args()
    names = [n.strip() for n in args.kinds.split(",") if n.strip()]
    unknown = [n for n in names if n not in KINDS]
    if unknown:
        parser.error(f"unknown kind(s) {', '.join(unknown)}")

    results = {}
    for name in names:
        generator, prepare_s = make_generator(name)
        indices = list(KINDS[name][1](args.samples))
        generator.render(indices[0])  # compile the kernels outside the timing
        row = one_core_rate(generator, indices, args.repeats)
        row.update(size=generator.image_size(), prepare_s=prepare_s)
        if args.build:
            row["build_images_per_s"] = build_rate(name, args.build_samples, args.workers)
        results[name] = row
        print(f"{name}: {row['images_per_s']:.0f} img/s", file=sys.stderr)
    search = search_rate(args.search_categories, min(args.workers, fractaldb_search.search_threads())) \
        if args.search_categories else None

    header = "| kind | size | images/s, 1 core (render + PNG) | render share |"
    rule = "|---|---|---|---|"
    if args.build:
        header += f" images/s, build, {args.workers} workers |"
        rule += "---|"
    lines = [header, rule]
    for name, row in results.items():
        line = (f"| {name} | {row['size']} | {row['images_per_s']:.0f} ({row['spread'][0]:.0f}-{row['spread'][1]:.0f}) "
                f"| {row['render_share']:.0%} |")
        if args.build:
            line += f" {row['build_images_per_s']:.0f} |"
        lines.append(line)
    if search:
        lines.append("")
        lines.append(f"FractalDB search (512x512, 100,000 points, threshold 0.2, {search['threads']} threads): "
                     f"{search['categories']} categories from {search['candidates']} candidates in "
                     f"{search['seconds']:.1f} s = {search['candidates_per_s']:.0f} candidates/s, "
                     f"{search['categories_per_s']:.2f} categories/s")
    print("\n".join(lines), file=sys.stderr)
    print(json.dumps({"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                  "processor": platform.processor()},
                      "samples": args.samples, "repeats": args.repeats, "kinds": results, "search": search}))


if __name__ == "__main__":
    main()
