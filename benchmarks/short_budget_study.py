"""When does the paper recipe's pre-training loss leave ln L, and which
single change makes it leave earliest? A CPU-scale study.

    python benchmarks/short_budget_study.py [--L 32,128] [--steps 300] [--batch 32] [--input-size 32]
                                            [--variants a,b] [--work DIR] [--seed 0]

For each L: a 1p-frac set at 64 px (fracbuild render), then one short
pre-training per variant of a tiny ViT (--input-size px input, patch 8, depth
2, width 64) with the ``paper`` recipe on the CPU, the variant's flags added. The loss is
recorded every 10 steps; a run "leaves ln L" at the first record whose mean
with the next one is below ln L - 0.1 (a margin above the records' noise at
these batch sizes). Prints one markdown table row per run and, at the end,
the whole table; --json writes every record too.

The variants keep what the paper's Table 9 found to matter (random crops,
Mixup / CutMix) and change one thing each.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

MODEL = ["--model", "vit_tiny", "--model-arg", "patch_size=8", "--model-arg", "depth=2",
         "--model-arg", "embed_dim=64", "--model-arg", "num_heads=2"]

VARIANTS: dict[str, tuple[str, list[str]]] = {
    "paper": ("the paper recipe as released", []),
    "lr-unscaled": ("lr 1e-3 as given (no x B / 512)", ["--lr-base-batch", "0"]),
    "lr-3e-3": ("lr 3e-3 as given", ["--lr", "3e-3", "--lr-base-batch", "0"]),
    "crop-0.25": ("crops of 25-100 % of the area (not 8-100 %)", ["--scale", "0.25", "1.0"]),
    "no-randaugment": ("RandAugment off", ["--aug-off", "randaugment,color-jitter"]),
    "no-erasing": ("random erasing off", ["--aug-off", "erasing"]),
    "no-drop-path": ("drop path 0", ["--drop-path", "0"]),
    "smoothing-0": ("label smoothing 0", ["--smoothing", "0"]),
    "lr-step": ("lr updated every step", ["--lr-update", "step"]),
    "mix-prob-0.5": ("Mixup / CutMix on half the batches (not all)", ["--mix-prob", "0.5"]),
    "lr-1e-2": ("lr 1e-2 as given", ["--lr", "1e-2", "--lr-base-batch", "0"]),
    # A reference, not a candidate (Table 9: cropping matters): how much of the delay the crop is.
    "no-crop": ("reference: random crops off", ["--aug-off", "crop"]),
    "no-crop-lr-unscaled": ("reference: random crops off and lr 1e-3 as given",
                            ["--aug-off", "crop", "--lr-base-batch", "0"]),
}


def leaves(records: list[dict], level: float) -> int | None:
    """The first step whose record, averaged with the next, is below ``level``."""
    losses = [(r["step"], r["loss"]) for r in records if "loss" in r]
    for (step, a), (_, b) in zip(losses, losses[1:]):
        if (a + b) / 2 < level:
            return step
    return None


def run(work: str, L: int, name: str, flags: list[str], steps: int, batch: int, seed: int, size: int) -> dict:
    out = os.path.join(work, f"L{L}-{size}px-{name}-s{seed}")
    command = [sys.executable, "-m", "fractrain", "--recipe", "paper", "--shards", os.path.join(work, f"L{L}"),
               *MODEL, "--input-size", str(size), "-b", str(batch), "--steps", str(steps), "--device", "cpu",
               "--augment", "gpu", "--workers", "0", "--log-every", "10", "--ckpt-every", "1000000", "--no-progress",
               "--seed", str(seed), "--out", out, *flags]
    started = time.perf_counter()
    # A finished run of the same name is reused (the study can be rerun after a stop).
    done = (subprocess.run(command, capture_output=True, text=True)
            if not os.path.exists(os.path.join(out, "summary.json")) else None)
    if done is not None and done.returncode:
        sys.exit(f"error: {name} at L = {L} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    with open(os.path.join(out, "metrics.jsonl"), encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    losses = [r["loss"] for r in records if "loss" in r]
    ln_l = math.log(L)
    return {"L": L, "input_size": size, "variant": name, "seed": seed, "steps": steps, "batch": batch,
            "leaves_ln_L_at_step": leaves(records, ln_l - 0.1), "first_loss": losses[0],
            "final_loss": sum(losses[-3:]) / 3, "ln_L": ln_l, "seconds": round(time.perf_counter() - started, 1),
            "records": records}


def row(result: dict) -> str:
    at = result["leaves_ln_L_at_step"]
    return (f"| {result['L']} | {result['input_size']} | {result['variant']} | {VARIANTS[result['variant']][0]} | "
            f"{at if at is not None else 'not within ' + str(result['steps'])} | "
            f"{result['first_loss']:.2f} → {result['final_loss']:.2f} (ln L {result['ln_L']:.2f}) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--L", default="32,128", help="class counts, comma-separated (default 32,128)")
    parser.add_argument("--steps", type=int, default=300, help="steps per run (default 300)")
    parser.add_argument("--batch", type=int, default=32, help="global batch (default 32)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="variants to run (default: all)")
    parser.add_argument("--input-size", type=int, default=32, help="model input side, px (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument("--work", default=None, help="work folder (default: a new temporary folder)")
    parser.add_argument("--json", default=None, help="also write every result, with its records, to this file")
    args = parser.parse_args()
    try:
        sizes = [int(v) for v in args.L.split(",") if v.strip()]
    except ValueError:
        parser.error(f"--L takes integers, got {args.L!r}")
    chosen = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(chosen) - set(VARIANTS))
    if unknown or not chosen or not sizes or min(sizes) < 2 or args.steps < 20 or args.batch < 2:
        parser.error(f"variants from {', '.join(VARIANTS)}; L >= 2; --steps >= 20; --batch >= 2")
    work = args.work or tempfile.mkdtemp(prefix="short_budget_study.")
    results = []
    for L in sizes:
        if args.batch > L:
            parser.error(f"--batch {args.batch} exceeds L = {L} (a drop-last epoch needs one whole batch)")
        if not os.path.exists(os.path.join(work, f"L{L}", "manifest.json")):
            subprocess.run([sys.executable, "-m", "fracbuild.cli", "render", "--L", str(L), "--size", "64",
                            "--out", os.path.join(work, f"L{L}"), "--no-progress"], check=True, capture_output=True)
        for name in chosen:
            result = run(work, L, name, VARIANTS[name][1], args.steps, args.batch, args.seed, args.input_size)
            print(row(result) + f" {result['seconds']} s", file=sys.stderr, flush=True)
            results.append(result)
    print("| L | input px | variant | change | leaves ln L - 0.1 at step | loss, first → last 30 steps |")
    print("|---|---|---|---|---|---|")
    for result in results:
        print(row(result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle)


if __name__ == "__main__":
    main()
