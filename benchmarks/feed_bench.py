"""The streaming feed's cost on the training process: CPU time of the
calling thread per sample while ShardFeed hands out steps (reading,
checking and parsing the shards in reader processes, or in threads of this
process with ``--readers 0``), and the samples/s it sustains alone.

    python benchmarks/feed_bench.py                 # 4,096 images of 256 px, readers 0 and 2
    python benchmarks/feed_bench.py --images 8192 --readers 0,1,2,4

The thread's CPU time (time.thread_time) counts what the training thread
would spend; the reader threads' work does not show there but holds the
interpreter lock (which the training thread then waits for), the reader
processes' does not. Rates are after the first step (start-up apart).
Medians of ``--repeats`` passes over one epoch; markdown on stderr, JSON on
stdout.
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

# No torch at the top: spawned reader processes import this script again.
from fracbuild.build import BuildSpec, run_build


def one_pass(feed, steps: int) -> tuple[float, float, float]:
    """(thread CPU seconds, wall seconds after the first step, start-up seconds) for ``steps`` steps."""
    started = time.perf_counter()
    items = feed.steps(range(steps))
    next(items)
    cpu, wall = time.thread_time(), time.perf_counter()
    for _ in items:
        pass
    return time.thread_time() - cpu, time.perf_counter() - wall, wall - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--px", type=int, default=256)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--readers", default="0,2", help="comma-separated reader-process counts (0: threads)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--window", type=int, default=1024, help="shuffle window, samples")
    args = parser.parse_args()
    from fractrain import data
    from fractrain.inputs.stream_schedule import StreamSchedule
    from fractrain.inputs.streaming import ShardFeed

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        spec = BuildSpec(kind="1p-frac", seed=0, prefix="bench",
                         params={"num_classes": args.images, "size": args.px, "pad": 4, "iterations": 20_000})
        run_build(spec, folder, workers=os.cpu_count() or 1, progress=False, log=lambda m: None)
        location, manifest, _ = data.read_manifest(folder)
        steps = args.images // args.batch
        for readers in [int(r) for r in args.readers.split(",")]:
            passes = []
            for _ in range(args.repeats):
                schedule = StreamSchedule.from_manifest(manifest, args.batch, 0, window=args.window)
                passes.append(one_pass(ShardFeed(location, manifest, schedule, readers=readers), steps))
            counted = (steps - 1) * args.batch
            cpu = statistics.median(p[0] for p in passes) / counted
            wall = statistics.median(p[1] for p in passes)
            start = statistics.median(p[2] for p in passes)
            rows.append({"readers": readers, "thread_us_per_sample": round(cpu * 1e6, 1),
                         "samples_per_s": round(counted / wall), "first_step_s": round(start, 2)})
            print(f"readers {readers}: {cpu * 1e6:.1f} us of the calling thread per sample, "
                  f"{counted / wall:.0f} samples/s after the first step ({start:.1f} s)", file=sys.stderr)
    print("\n| readers | calling thread, us per sample | samples/s | first step, s |\n|---|---|---|---|",
          file=sys.stderr)
    for row in rows:
        print(f"| {row['readers'] or 'threads'} | {row['thread_us_per_sample']} | {row['samples_per_s']} | "
              f"{row['first_step_s']} |", file=sys.stderr)
    print(json.dumps({"machine": platform.machine(), "cpus": os.cpu_count(), "images": args.images, "px": args.px,
                      "rows": rows}))


if __name__ == "__main__":
    main()
