"""When does the paper recipe's pre-training loss leave ln L, and which
single change makes it leave earliest? A CPU-scale study.

    python benchmarks/short_budget_study.py [--L 32,128] [--steps 300] [--batch 32] [--input-size 32]
                                            [--variants a,b+c] [--model tiny|small] [--work DIR] [--seed 0]

For each L: a 1p-frac set at 64 px (fracbuild render), then one short
pre-training per variant of a small ViT (--model tiny: patch 8, depth 2, width
64, 2 heads; --model small: patch 4, depth 4, width 96, 3 heads, the model that
learned in benchmarks/transfer_check.sh) at --input-size px with the ``paper``
recipe on the CPU, the variant's flags added. A variant joined with ``+`` is a
combination: every named change at once (``simple+crop-0.5``). The loss is
recorded every 10 steps; a run "leaves ln L" at the first record whose mean
with the next one is below ln L - 0.1 (a margin above the records' noise at
these batch sizes). Prints one markdown table row per run and, at the end,
the whole table; --json writes every record too.

The variants keep what the paper's Table 9 found to matter (random crops,
Mixup / CutMix) and change one thing each; ``simple`` is the strongest
simplification that keeps them (the paper's lr taken as given, RandAugment,
erasing, label smoothing and drop path off), the start of the search for a
short-budget recipe, from which single changes are then backed off.
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

MODELS = {
    "tiny": ["--model", "vit_tiny", "--model-arg", "patch_size=8", "--model-arg", "depth=2",
             "--model-arg", "embed_dim=64", "--model-arg", "num_heads=2"],
    "small": ["--model", "vit_tiny", "--model-arg", "patch_size=4", "--model-arg", "depth=4",
              "--model-arg", "embed_dim=96", "--model-arg", "num_heads=3"],
}

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
    "crop-0.35": ("crops of 35-100 % of the area", ["--scale", "0.35", "1.0"]),
    "crop-0.5": ("crops of 50-100 % of the area", ["--scale", "0.5", "1.0"]),
    "warmup-1": ("1 warm-up epoch (not 5)", ["--warmup-epochs", "1"]),
    "simple": ("lr 1e-3 as given, RandAugment, erasing, smoothing and drop path off",
               ["--lr-base-batch", "0", "--aug-off", "randaugment,color-jitter,erasing", "--smoothing", "0",
                "--drop-path", "0"]),
    "flips-only": ("reference: flips only, lr 1e-3 as given (the transfer check's recipe)",
                   ["--lr-base-batch", "0", "--aug-off", "crop,mixup,cutmix,randaugment,erasing,color-jitter"]),
}


def describe(name: str) -> str:
    """What a variant or a ``+`` combination of variants changes."""
    return "; ".join(VARIANTS[part][0] for part in name.split("+"))


def flags_of(name: str) -> list[str]:
    """The fractrain flags of a variant or a ``+`` combination (later parts win)."""
    return [flag for part in name.split("+") for flag in VARIANTS[part][1]]


def leaves(records: list[dict], level: float) -> int | None:
    """The first step whose record, averaged with the next, is below ``level``."""
    losses = [(r["step"], r["loss"]) for r in records if "loss" in r]
    for (step, a), (_, b) in zip(losses, losses[1:]):
        if (a + b) / 2 < level:
            return step
    return None


def run(work: str, L: int, name: str, flags: list[str], steps: int, batch: int, seed: int, size: int,
        model: str = "tiny") -> dict:
    # Tiny-model folders carry no model, batch or step tag: the names existing work folders use.
    tag = "" if model == "tiny" else f"{model}-"
    out = os.path.join(work, f"L{L}-{size}px-{tag}{name}-b{batch}-{steps}-s{seed}" if tag
                       else f"L{L}-{size}px-{name}-s{seed}")
    command = [sys.executable, "-m", "fractrain", "--recipe", "paper", "--shards", os.path.join(work, f"L{L}"),
               *MODELS[model], "--input-size", str(size), "-b", str(batch), "--steps", str(steps), "--device", "cpu",
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
    return {"L": L, "input_size": size, "model": model, "variant": name, "seed": seed, "steps": steps, "batch": batch,
            "leaves_ln_L_at_step": leaves(records, ln_l - 0.1), "first_loss": losses[0],
            "final_loss": sum(losses[-3:]) / 3, "ln_L": ln_l, "seconds": round(time.perf_counter() - started, 1),
            "records": records}


def row(result: dict) -> str:
    at = result["leaves_ln_L_at_step"]
    return (f"| {result['L']} | {result['input_size']} | {result['variant']} | {describe(result['variant'])} | "
            f"{at if at is not None else 'not within ' + str(result['steps'])} | "
            f"{result['first_loss']:.2f} → {result['final_loss']:.2f} (ln L {result['ln_L']:.2f}) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--L", default="32,128", help="class counts, comma-separated (default 32,128)")
    parser.add_argument("--steps", type=int, default=300, help="steps per run (default 300)")
    parser.add_argument("--batch", type=int, default=32, help="global batch (default 32)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="variants to run, comma-separated; a+b is a combination (default: every single one)")
    parser.add_argument("--model", default="tiny", choices=sorted(MODELS),
                        help="tiny: patch 8, depth 2, width 64; small: patch 4, depth 4, width 96 (default tiny)")
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
    unknown = sorted({part for name in chosen for part in name.split("+")} - set(VARIANTS))
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
            result = run(work, L, name, flags_of(name), args.steps, args.batch, args.seed, args.input_size,
                         args.model)
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
