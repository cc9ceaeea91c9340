"""Table 5 in miniature with the ``short`` recipe: does 1p-frac pre-training
with random crops and Mixup/CutMix on beat scratch, and does Δ = 0.001 fall
below Δ = 0.1 (the paper's collapse)? On the CPU, about 40 minutes on 2 cores.

    python benchmarks/table5_cpu_short.py [--work runs/table5-cpu-short]

Writes scikit-learn's digits as ImageFolder trees (32 px) into the work
folder, then runs ``fractrain experiment benchmarks/table5_cpu_short.yaml``
there (the file's relative ``digits/...`` paths resolve inside it). Rerun
the same command to skip finished runs and resume a stopped one; the table
is in WORK/report.md, the loss curves in WORK/loss.png.
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
EXPERIMENT = os.path.join(HERE, "table5_cpu_short.yaml")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=os.path.join("runs", "table5-cpu-short"),
                        help="folder for digits, data sets, runs and the report (default runs/table5-cpu-short)")
    args = parser.parse_args(argv)
    sys.path.insert(0, HERE)
    from train_bench import write_digits  # the digits writer the other CPU-scale checks use
    from fractrain.cli import main as fractrain

    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    if not os.path.isdir(os.path.join(work, "digits", "val")):
        write_digits(os.path.join(work, "digits"), size=32)
    os.chdir(work)
    return fractrain(["experiment", EXPERIMENT, "--work", "."])


if __name__ == "__main__":
    sys.exit(main())
