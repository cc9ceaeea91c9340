"""CPU training speed: torch's default thread counts against fractrain's
choice from the cores this process may use (trainer/threads.py).

    python benchmarks/cpu_threads_bench.py [--rounds 3] [--steps 40] [--work DIR]

Builds a small 1p-frac set (L = 64, 64 px), then pre-trains a small ViT (32 px
input, patch 4, depth 4, width 96) on the CPU with the full recipe on the CPU
input path, ``--rounds`` times in each of two settings, alternating:

    default  torch's own intra-op threads (--threads 0, OMP_NUM_THREADS unset)
             and the earlier loader default, min(8, cores - 1) workers
    chosen   fractrain's choice (no --threads / --workers)

Images/s per run is the median over the metrics records after the first
(windows of --log-every steps); per setting the median over rounds. Prints
one JSON line with both and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

MODEL = ["--model", "vit_tiny", "--input-size", "32", "--model-arg", "patch_size=4", "--model-arg", "depth=4",
         "--model-arg", "embed_dim=96", "--model-arg", "num_heads=3"]


def run_once(work: str, name: str, extra: list[str], steps: int, log_every: int, index: int) -> float:
    out = os.path.join(work, f"{name}-{index}")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    command = [sys.executable, "-m", "fractrain", "--shards", os.path.join(work, "shards"), *MODEL, "-b", "64",
               "--steps", str(steps), "--device", "cpu", "--augment", "cpu", "--no-progress",
               "--log-every", str(log_every), "--ckpt-every", "1000000", "--out", out, *extra]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"error: {name} run failed: {done.stderr.strip().splitlines()[-1]}")
    note = next((line for line in done.stderr.splitlines() if line.startswith("CPU threads:")), "")
    with open(os.path.join(out, "metrics.jsonl"), encoding="utf-8") as handle:
        rates = [json.loads(line)["images_per_s"] for line in handle if '"images_per_s"' in line]
    print(f"{name} #{index}: {statistics.median(rates[1:]):.1f} images/s; {note}", file=sys.stderr)
    return statistics.median(rates[1:])  # the first record includes start-up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs per setting, alternating (default 3)")
    parser.add_argument("--steps", type=int, default=40, help="steps per run (default 40)")
    parser.add_argument("--log-every", type=int, default=8, help="steps per timed window (default 8)")
    parser.add_argument("--work", default=None, help="work folder (default: a new temporary folder)")
    args = parser.parse_args()
    if min(args.rounds, args.steps, args.log_every) < 1 or args.steps < 2 * args.log_every:
        parser.error("--rounds, --steps and --log-every must be >= 1 and --steps >= 2 x --log-every")
    work = args.work or tempfile.mkdtemp(prefix="cpu_threads_bench.")
    subprocess.run([sys.executable, "-m", "fracbuild.cli", "render", "--L", "64", "--size", "64", "--out",
                    os.path.join(work, "shards"), "--no-progress"], check=True, capture_output=True)
    cores = len(os.sched_getaffinity(0))
    settings = {"default": ["--threads", "0", "--workers", str(max(0, min(8, cores - 1)))], "chosen": []}
    rates: dict[str, list[float]] = {name: [] for name in settings}
    for index in range(args.rounds):
        for name, extra in settings.items():
            rates[name].append(run_once(work, name, extra, args.steps, args.log_every, index))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(json.dumps({"cores": cores, "machine": platform.processor() or platform.machine(),
                      "rounds": {k: [round(v, 1) for v in values] for k, values in rates.items()},
                      "default_images_per_s": round(medians["default"], 1),
                      "chosen_images_per_s": round(medians["chosen"], 1),
                      "chosen_vs_default": round(medians["chosen"] / medians["default"], 2)}))


if __name__ == "__main__":
    main()
