"""Helpers for the trainer's benchmark and GPU check (benchmarks/gpu_check.sh).

    python benchmarks/train_bench.py digits --out DIR [--size 32] [--val-fraction 0.25]
        scikit-learn's digits (1,797 8x8 images, 10 classes) written as two
        ImageFolder trees, DIR/train/<class>/*.png and DIR/val/<class>/*.png:
        a small real data set shipped with a package, for fine-tuning checks.

    python benchmarks/train_bench.py report RUN_DIR [RUN_DIR ...]
        One line per run folder from its summary.json and metrics.jsonl:
        images/s, loss at start and end, peak GPU memory, best accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np


def write_digits(out: str, size: int = 32, val_fraction: float = 0.25, seed: int = 0,
                 limit: int | None = None) -> dict[str, int]:
    """Write digits as ImageFolder train/val trees; returns image counts.

    The 8x8 images (values 0..16) are scaled to 0..255 and enlarged to
    ``size`` with nearest-neighbour resampling, saved as grayscale PNG. The
    split is stratified-by-shuffle with ``seed``; ``limit`` caps the total.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    labels = digits.target.astype(int)
    order = np.random.default_rng(seed).permutation(len(labels))
    if limit is not None:
        order = order[:limit]
    n_val = int(round(len(order) * val_fraction))
    counts = {"train": 0, "val": 0}
    for rank, index in enumerate(order):
        split = "val" if rank < n_val else "train"
        folder = os.path.join(out, split, str(labels[index]))
        os.makedirs(folder, exist_ok=True)
        image = Image.fromarray(images[index]).resize((size, size), Image.NEAREST)
        image.save(os.path.join(folder, f"{index:04d}.png"))
        counts[split] += 1
    return counts


def report(run_dir: str) -> dict:
    """Key figures of one finished run folder."""
    with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as handle:
        summary = json.load(handle)
    rates = []
    metrics = os.path.join(run_dir, "metrics.jsonl")
    if os.path.exists(metrics):
        with open(metrics, encoding="utf-8") as handle:
            records = [json.loads(line) for line in handle if line.strip()]
        # Steady state: skip the first records (start-up, compilation).
        rates = [r["images_per_s"] for r in records if "images_per_s" in r][2:]
    return {
        "run": run_dir, "command": summary.get("command"), "model": summary.get("model"),
        "steps": summary.get("steps"), "images_per_s_overall": summary.get("images_per_s"),
        "images_per_s_steady": round(float(np.median(rates)), 1) if rates else None,
        "first_loss": summary.get("first_loss"), "last_loss": summary.get("last_loss"),
        "peak_gpu_memory_gb": summary.get("peak_gpu_memory_gb"),
        "best_top1": summary.get("best_top1"), "best_top5": summary.get("best_top5"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    digits = sub.add_parser("digits", help="write scikit-learn's digits as ImageFolder train/val trees")
    digits.add_argument("--out", required=True)
    digits.add_argument("--size", type=int, default=32, help="image side, pixels (default 32)")
    digits.add_argument("--val-fraction", type=float, default=0.25)
    digits.add_argument("--seed", type=int, default=0)
    rep = sub.add_parser("report", help="print key figures of finished runs")
    rep.add_argument("runs", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "digits":
        counts = write_digits(args.out, args.size, args.val_fraction, args.seed)
        print(json.dumps({"out": args.out, **counts}))
    else:
        for run_dir in args.runs:
            print(json.dumps(report(run_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
