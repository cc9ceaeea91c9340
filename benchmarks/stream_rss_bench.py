"""Peak memory of pre-training as the data set grows: streamed from the
shards (memory bounded by the shuffle window) against decoded in memory.

Builds 1p-frac sets of each size in ``--sizes`` (``--px`` pixels), then for
each trains a tiny ViT for ``--steps`` steps with a forced memory budget of
``--budget-mb`` (so ``--input auto`` streams every set: the sets are 10x,
20x, ... the budget) and, for contrast, with ``--input memory``. Each run is
its own process (``python -m fractrain pretrain``, loader workers 0 so that
all the work is in that process); its peak RSS comes from ``os.wait4``.

    python benchmarks/stream_rss_bench.py                  # 2000, 4000, 8000 images of 128 px
    python benchmarks/stream_rss_bench.py --sizes 1000,4000 --steps 100

Prints a markdown table on stderr and one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

from fracbuild.build import BuildSpec, run_build

TINY_VIT = ["--model", "vit_tiny", "--input-size", "32", "--model-arg", "patch_size=8", "--model-arg", "depth=2",
            "--model-arg", "embed_dim=64", "--model-arg", "num_heads=2"]


def peak_rss_mb(command: list[str]) -> tuple[float, float, str]:
    """(peak RSS of the process in MB, seconds, stderr's last line)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err,
                                   env={**os.environ, "OMP_NUM_THREADS": "1"})
        _, status, usage = os.wait4(process.pid, 0)
        err.seek(0)
        lines = err.read().decode(errors="replace").strip().splitlines()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n" + "\n".join(lines[-5:]))
    return usage.ru_maxrss / 1024, time.perf_counter() - started, lines[-1] if lines else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2000,4000,8000", help="images per set, comma-separated")
    parser.add_argument("--px", type=int, default=128, help="image side, pixels")
    parser.add_argument("--budget-mb", type=float, default=3.3, help="forced memory budget, MB")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--shuffle-buffer", type=int, default=512)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for size in [int(s) for s in args.sizes.split(",")]:
            shards = os.path.join(folder, f"set-{size}")
            spec = BuildSpec(kind="1p-frac", seed=0, prefix="bench", shard_size=250,
                             params={"num_classes": size, "size": args.px, "pad": 4, "iterations": 10_000})
            run_build(spec, shards, workers=os.cpu_count() or 1, progress=False, log=lambda m: None)
            decoded_mb = size * args.px * args.px / 1e6
            for mode in ("stream", "memory"):
                command = [sys.executable, "-m", "fractrain", "pretrain", "--shards", shards, *TINY_VIT,
                           "-b", str(args.batch), "--steps", str(args.steps), "--workers", "0", "--device", "cpu",
                           "--no-progress", "--shuffle-buffer", str(args.shuffle_buffer),
                           "--out", os.path.join(folder, f"run-{size}-{mode}")]
                # The memory runs keep the default budget: the set in RAM, not in a temporary file.
                command += (["--input", "auto", "--memory-budget", str(args.budget_mb / 1e3)] if mode == "stream"
                            else ["--input", "memory"])
                rss, seconds, last = peak_rss_mb(command)
                rows.append({"images": size, "decoded_mb": decoded_mb, "times_budget": decoded_mb / args.budget_mb,
                             "input": mode, "peak_rss_mb": round(rss, 1), "seconds": round(seconds, 1)})
                print(f"{size} images, {mode}: peak RSS {rss:.0f} MB, {seconds:.0f} s ({last[:80]})", file=sys.stderr)
    print("\n| images | decoded MB | x budget | input | peak RSS MB | seconds |", file=sys.stderr)
    print("|---|---|---|---|---|---|", file=sys.stderr)
    for row in rows:
        print(f"| {row['images']} | {row['decoded_mb']:.0f} | {row['times_budget']:.0f} | {row['input']} | "
              f"{row['peak_rss_mb']:.0f} | {row['seconds']:.0f} |", file=sys.stderr)
    print(json.dumps({"machine": platform.machine(), "cpus": os.cpu_count(), "px": args.px, "steps": args.steps,
                      "batch": args.batch, "budget_mb": args.budget_mb, "shuffle_buffer": args.shuffle_buffer,
                      "rows": rows}))


if __name__ == "__main__":
    main()
