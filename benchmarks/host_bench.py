"""Host time per batch on the training thread, for the device input path.

On a GPU, what the training thread spends per batch of the device path is
host time: planning the batch (drawing every augmentation choice, a few
hundred tiny CPU tensor operations) and launching the augmentation's
kernels. When that exceeds the model step's GPU time the GPU waits. This
script measures it on any machine: DevicePipeline on the CPU with tiny
images, so that the pixel arithmetic is negligible and what is left is the
per-operation cost, with the plans drawn on the training thread
(``--planners 0``) or ahead in DataLoader workers (the default on a GPU),
with the heaviest functions eager or compiled (``--fuse``: a compiled
call costs its guards' evaluation instead of one launch per operation), and
in the augmentation's op-by-op or static layout (``--modes``: the static one
is one compiled graph of fixed shapes; the graph mode, CUDA only, replays it
as CUDA graphs for a few microseconds more).

    python benchmarks/host_bench.py                       # planners 0 and 2, batch 256
    python benchmarks/host_bench.py --planners 0,1,2 --batch 128 --repeats 7
    python benchmarks/host_bench.py --planners 2 --fuse 0,1   # eager vs fused kernels
    python benchmarks/host_bench.py --planners 2 --fuse 1 --modes op-by-op,static

The figure is the training thread's CPU time (``time.thread_time``) per
batch: worker processes are not counted, waiting for them is. Each run
interleaves the settings and repeats them; medians are printed as a
markdown table on stderr and one JSON line on stdout.
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


def training_thread_ms(pipeline, steps: int) -> float:
    """Median CPU time of the calling thread per batch, over ``steps`` batches
    (after two warm-up batches, which also start the workers)."""
    batches = pipeline.batches(0, steps + 2)
    next(batches), next(batches)
    times = []
    for _ in range(steps):
        started = time.thread_time()
        next(batches)
        times.append(time.thread_time() - started)
    batches.close()
    return statistics.median(times) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--planners", default="0,2", help="comma-separated plan_workers settings (default: 0,2)")
    parser.add_argument("--batch", type=int, default=256, help="images per batch (default: 256)")
    parser.add_argument("--image", type=int, default=16, help="cached image side, pixels (default: 16)")
    parser.add_argument("--size", type=int, default=8, help="augmented image side, pixels (default: 8)")
    parser.add_argument("--steps", type=int, default=20, help="timed batches per measurement (default: 20)")
    parser.add_argument("--repeats", type=int, default=5, help="measurements per setting (default: 5)")
    parser.add_argument("--fuse", default="0", help="comma-separated fuse settings, 0 and/or 1 (default: 0); "
                                                   "fused functions are compiled before timing")
    parser.add_argument("--modes", default="op-by-op", help="comma-separated augmentation layouts: op-by-op, "
                                                          "static (default: op-by-op)")
    args = parser.parse_args(argv)
    sys.path.insert(0, REPO)
    from fractrain.inputs.device import DevicePipeline
    from fractrain.recipe import AugmentRecipe
    from fractrain.schedule import EpochSchedule

    torch.set_num_threads(1)  # the arithmetic, tiny anyway, stays on the timed thread
    rng = np.random.default_rng(0)
    count = 4 * args.batch
    images = rng.integers(0, 256, (count, args.image, args.image), dtype=np.uint8)
    labels = np.arange(count) % 1000
    settings = [(int(p), bool(int(f)), m) for m in args.modes.split(",") for f in args.fuse.split(",")
                for p in args.planners.split(",")]
    pipelines = {(p, f, m): DevicePipeline(images, labels, EpochSchedule(count, args.batch, seed=0),
                                           AugmentRecipe(input_size=args.size), 1000, torch.device("cpu"), seed=0,
                                           plan_workers=p, augment_options={"fuse": f}, augment_mode=m)
                 for p, f, m in settings}
    for (p, f, m), pipeline in pipelines.items():
        if f:  # compile every variant the timed batches will meet (a few dozen batches)
            for _ in pipeline.batches(0, 3 * args.steps):
                pass
    samples: dict[tuple[int, bool, str], list[float]] = {s: [] for s in settings}
    for _ in range(args.repeats):
        for setting in settings:  # interleaved: drifts in machine load hit every setting alike
            samples[setting].append(training_thread_ms(pipelines[setting], args.steps))
    rows = [{"plan_workers": p, "fuse": f, "mode": m, "ms": round(statistics.median(v), 2),
             "ms_all": [round(t, 2) for t in v]} for (p, f, m), v in samples.items()]
    base = rows[0]["ms"]
    print(f"| mode | plan workers | fused | training-thread ms per batch (median of {args.repeats}) | vs first |",
          file=sys.stderr)
    print("| --- | --- | --- | --- | --- |", file=sys.stderr)
    for row in rows:
        print(f"| {row['mode']} | {row['plan_workers']} | {row['fuse']} | {row['ms']} | {row['ms'] / base:.2f} |",
              file=sys.stderr)
    print(json.dumps({"batch": args.batch, "image": args.image, "size": args.size, "torch": torch.__version__,
                      "machine": platform.machine(), "cpus": os.cpu_count(), "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
