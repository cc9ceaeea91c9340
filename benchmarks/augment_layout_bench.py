"""The GPU augmentation's two host-launched layouts side by side: op-by-op
(each op on the samples that drew it) against static (every batch in the
same shapes, each op computed on every sample and masked), as the trainer
builds them when no option is given (default resize, not fused), on one
device (the CPU by default: where op-by-op is the default layout).

    python benchmarks/augment_layout_bench.py                       # CPU, 32 and 128 x 512 -> 224
    python benchmarks/augment_layout_bench.py --configs 32x512-\\>224 --windows 9

Timed in windows of --calls whole calls (plan + apply) each; the layouts
take turns window by window (A B, B A, ...) so that drift on a shared
machine weighs on both alike. Prints, per configuration, each layout's
median ms per call over its windows and static / op-by-op (above 1:
op-by-op is faster), as a markdown table on stderr and one JSON line on
stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from augment_bench import config_batch, generator_for  # noqa: E402  (the same synthetic batch)

LAYOUTS = {"op-by-op": {}, "static": {"static": True}}


def window_ms(augment, images, targets, module, device, calls: int, seed: int) -> float:
    """Mean ms per call over ``calls`` whole calls (synchronised on CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for call in range(calls):
        augment(images, targets, generator_for(module, device, seed + call))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - started) * 1000 / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    parser.add_argument("--configs", default="32x512->224,128x512->224",
                        help="comma-separated BATCHxIMAGE->SIZE: batch, stored image side and crop side in "
                             "pixels (default: %(default)s)")
    parser.add_argument("--windows", type=int, default=5, help="timed windows per layout (default: %(default)s)")
    parser.add_argument("--calls", type=int, default=3, help="calls per window (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.windows < 1 or args.calls < 1:
        parser.error("--windows and --calls must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, os.path.dirname(HERE))
    from fractrain import gpu_augment as module

    device = torch.device(args.device)
    rows = []
    for config in args.configs.split(","):
        images, targets, recipe = config_batch(config, device)
        augments = {name: module.GpuAugment(recipe, 1000, device, **options) for name, options in LAYOUTS.items()}
        for name, augment in augments.items():  # warm-up: first-call allocations
            window_ms(augment, images, targets, module, device, 1, 1000)
        times: dict[str, list[float]] = {name: [] for name in augments}
        order = list(augments)
        for window in range(args.windows):
            for name in order if window % 2 == 0 else order[::-1]:
                times[name].append(window_ms(augments[name], images, targets, module, device, args.calls,
                                             seed=10 * window))
        medians = {name: statistics.median(values) for name, values in times.items()}
        rows.append({"config": config, "device": str(device), "threads": torch.get_num_threads(),
                     **{f"{name}_ms": round(ms, 1) for name, ms in medians.items()},
                     "static_over_op_by_op": round(medians["static"] / medians["op-by-op"], 2)})
        print(f"{config}: " + ", ".join(f"{name} {ms:.1f} ms" for name, ms in medians.items()), file=sys.stderr)
    print("| config | threads | op-by-op ms/call | static ms/call | static / op-by-op |", file=sys.stderr)
    print("|---|---|---|---|---|", file=sys.stderr)
    for row in rows:
        print(f"| {row['config']} | {row['threads']} | {row['op-by-op_ms']} | {row['static_ms']} | "
              f"{row['static_over_op_by_op']} |", file=sys.stderr)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
