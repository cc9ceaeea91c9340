"""Ray against the local process pool on the same CPUs: images/s of the same
build both ways, Ray's cost per task and per image, and the per-core rates
that size a cluster.

    python benchmarks/ray_bench.py                   # 2 CPUs, 1p-frac L = 1,000 and FractalDB 10 x 100
    python benchmarks/ray_bench.py --cpus 4 --repeats 5

For each kind: one build through the local pool with 1 worker (the per-core
rate), then, alternating, builds through the pool with --cpus workers and
through a local Ray of --cpus CPUs (warm: its worker processes already
started by a first, unmeasured build). Figures are medians of --repeats;
render time only (the search runs once, before). Also the round trip of an
empty Ray task. Prints a table on stderr and one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

from fracbuild.build import BuildSpec, resolve, run_build
from fracbuild.ray_exec import RayExecutor

CASES = {
    "1p-frac": {"num_classes": 1000},
    "fractaldb": {"num_categories": 10, "instances": 100},
}


def _quiet(message: str) -> None:
    pass


def timed_build(spec: BuildSpec, system: dict, folder: str, *, workers: int = 1, distributed=None) -> float:
    """Render seconds of one fresh build of ``spec`` into ``folder``."""
    shutil.rmtree(folder, ignore_errors=True)
    manifest = run_build(spec, folder, workers=workers, system=system, progress=False, log=_quiet,
                         distributed=distributed)
    return manifest["timings"]["render_seconds"]


def shard_bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder) if name.endswith(".tar"))


def empty_task_ms(ray, count: int = 500) -> float:
    """ms per empty task, submitted all at once and gathered (throughput, not latency)."""
    noop = ray.remote(lambda: None)
    ray.get([noop.remote() for _ in range(50)])  # workers up
    started = time.perf_counter()
    ray.get([noop.remote() for _ in range(count)])
    return (time.perf_counter() - started) / count * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpus", type=int, default=2, help="Pool workers and Ray CPUs. [default: 2]")
    parser.add_argument("--repeats", type=int, default=3, help="Builds per mode; medians are quoted. [default: 3]")
    parser.add_argument("--shard-size", type=int, default=64, help="Samples per shard. [default: 64]")
    args = parser.parse_args()

    import ray

    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    executor = RayExecutor("local")
    results: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible",
                     "python": platform.python_version(), "cpus": args.cpus, "shard_size": args.shard_size,
                     "empty_task_ms": empty_task_ms(ray), "kinds": {}}
    with tempfile.TemporaryDirectory() as scratch:
        for kind, params in CASES.items():
            spec = BuildSpec(kind=kind, seed=0, params=params, prefix=kind, shard_size=args.shard_size)
            generator_cls, resolved = resolve(spec)
            system = generator_cls.prepare(resolved, 0, _quiet)
            images = generator_cls(resolved, 0, system).num_samples()
            shards = -(-images // args.shard_size)
            folder = os.path.join(scratch, kind)
            one_core = statistics.median(timed_build(spec, system, folder) for _ in range(args.repeats))
            timed_build(spec, system, folder, distributed=executor)  # Ray's workers start and load numba here
            pool_times, ray_times = [], []
            for _ in range(args.repeats):
                pool_times.append(timed_build(spec, system, folder, workers=args.cpus))
                ray_times.append(timed_build(spec, system, folder, distributed=executor))
            pool_s, ray_s = statistics.median(pool_times), statistics.median(ray_times)
            results["kinds"][kind] = {
                "images": images, "shards": shards, "bytes_per_image": shard_bytes(folder) / images,
                "per_core_images_per_s": images / one_core,
                "pool_images_per_s": images / pool_s, "ray_images_per_s": images / ray_s,
                "ray_over_pool": ray_s / pool_s,
                # Ray's fixed cost per task against one shard's work on one core
                "empty_task_share_of_shard": results["empty_task_ms"] / (args.shard_size * 1e3 * one_core / images),
                "ray_extra_ms_per_task": (ray_s - pool_s) / shards * 1e3 * args.cpus,
                "ray_extra_ms_per_image": (ray_s - pool_s) / images * 1e3 * args.cpus,
                "pool_seconds": pool_times, "ray_seconds": ray_times,
            }
    ray.shutdown()

    print(f"{results['machine']}; {args.cpus} CPUs for both; shards of {args.shard_size}; "
          f"medians of {args.repeats}; empty Ray task {results['empty_task_ms']:.2f} ms", file=sys.stderr)
    print(f"{'kind':10} {'images':>7} {'1 core img/s':>13} {'pool img/s':>11} {'Ray img/s':>10} "
          f"{'Ray/pool time':>14} {'extra CPU-ms/task':>18} {'empty task/shard':>17}", file=sys.stderr)
    for kind, row in results["kinds"].items():
        print(f"{kind:10} {row['images']:7d} {row['per_core_images_per_s']:13.0f} {row['pool_images_per_s']:11.0f} "
              f"{row['ray_images_per_s']:10.0f} {row['ray_over_pool']:14.3f} {row['ray_extra_ms_per_task']:18.1f} "
              f"{row['empty_task_share_of_shard']:17.2%}",
              file=sys.stderr)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
