"""The training thread's time to fetch one step's plan from the plan workers.

The device input path plans each step in DataLoader workers and sends the
plans to the training process (``DevicePipeline.plans``). Each DataLoader
message costs the training thread a share of its own (putting the index
on the workers' queue, receiving, unpickling, its locks), whatever its
size; sending ``plans_per_message`` steps' plans at a time divides that
share. This script measures the training thread's CPU time
(``time.thread_time``) per plan, for each setting, with the workers kept
ahead (a pause between fetches stands in for the training step, so waiting
for a worker is not counted). Plans of the default recipe at the given
batch and sizes (the static layout by default: what the graph mode sends).

    python benchmarks/plan_fetch_bench.py                         # 1 vs 4 plans per message
    python benchmarks/plan_fetch_bench.py --per-message 1,2,4,8 --repeats 7

Settings are interleaved and repeated; medians are printed as a markdown
table on stderr and one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fetch_ms(pipeline, plans: int, pause_s: float) -> float:
    """Median training-thread CPU ms per plan over ``plans`` fetched plans."""
    steps = pipeline.plans(range(plans + 2 * pipeline.plans_per_message))
    for _ in range(pipeline.plans_per_message):  # start the workers; let them fill the queue
        next(steps)
    time.sleep(1.0)
    times = []
    for _ in range(plans):
        started = time.thread_time()
        next(steps)
        times.append(time.thread_time() - started)
        time.sleep(pause_s)
    steps.close()
    # A message's cost lands on the plan that received it: the mean over
    # whole messages is the per-plan figure; the median would hide it.
    whole = len(times) - len(times) % pipeline.plans_per_message
    return statistics.fmean(times[:whole]) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-message", default="1,4", help="comma-separated plans_per_message (default: 1,4)")
    parser.add_argument("--workers", type=int, default=2, help="plan workers (default: 2)")
    parser.add_argument("--batch", type=int, default=256, help="images per batch (default: 256)")
    parser.add_argument("--image", type=int, default=512, help="cached image side, pixels (default: 512)")
    parser.add_argument("--size", type=int, default=224, help="augmented image side, pixels (default: 224)")
    parser.add_argument("--mode", default="static", help="augmentation layout of the plans (default: static)")
    parser.add_argument("--plans", type=int, default=32, help="plans fetched per measurement (default: 32)")
    parser.add_argument("--pause-ms", type=float, default=20.0,
                        help="pause after each fetch, standing in for the step (default: 20)")
    parser.add_argument("--repeats", type=int, default=5, help="measurements per setting (default: 5)")
    args = parser.parse_args(argv)
    sys.path.insert(0, REPO)
    from fractrain.inputs.device import DevicePipeline
    from fractrain.recipe import AugmentRecipe
    from fractrain.schedule import EpochSchedule

    settings = [int(v) for v in args.per_message.split(",")]
    images = np.zeros((max(args.batch, 64), args.image, args.image), np.uint8)
    labels = np.arange(len(images)) % 10
    results: dict[int, list[float]] = {k: [] for k in settings}
    for _ in range(args.repeats):
        for k in settings:
            pipeline = DevicePipeline(images, labels, EpochSchedule(len(images), args.batch, seed=0),
                                      AugmentRecipe(input_size=args.size), 10, torch.device("cpu"), seed=0,
                                      plan_workers=args.workers, augment_mode=args.mode, plans_per_message=k)
            results[k].append(fetch_ms(pipeline, args.plans, args.pause_ms / 1e3))
    medians = {k: statistics.median(v) for k, v in results.items()}
    base = medians[settings[0]]
    print(f"plan fetch, training-thread CPU ms per plan ({platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs; batch {args.batch}, {args.image} -> {args.size}, {args.mode}, "
          f"{args.workers} workers; median of {args.repeats})", file=sys.stderr)
    print("| plans per message | ms per plan | / first |", file=sys.stderr)
    print("|---|---|---|", file=sys.stderr)
    for k in settings:
        print(f"| {k} | {medians[k]:.3f} | {medians[k] / base:.2f} |", file=sys.stderr)
    print(json.dumps({"ms_per_plan": {str(k): round(v, 4) for k, v in medians.items()},
                      "runs": {str(k): [round(x, 4) for x in v] for k, v in results.items()},
                      "batch": args.batch, "image": args.image, "size": args.size, "mode": args.mode,
                      "workers": args.workers, "cpus": os.cpu_count()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
