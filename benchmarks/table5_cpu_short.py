"""Table 5 in miniature with the ``short`` recipe: does 1p-frac pre-training
with random crops and Mixup/CutMix on beat scratch, and does Δ = 0.001 fall
below Δ = 0.1 (the paper's collapse)? On the CPU, about 40 minutes on 2 cores.

    python benchmarks/table5_cpu_short.py [--work runs/table5-cpu-short] [--pretrain-steps N]

Writes scikit-learn's digits as ImageFolder trees (32 px) into the work
folder, then runs ``fractrain experiment benchmarks/table5_cpu_short.yaml``
there (the file's relative ``digits/...`` paths resolve inside it).
--pretrain-steps runs a copy of the file with another pre-training budget
(written into the work folder, its name suffixed with the steps). Rerun
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
    parser.add_argument("--pretrain-steps", type=int, default=None,
                        help="pre-training steps per row (default: the file's, 3,000)")
    args = parser.parse_args(argv)
    if args.pretrain_steps is not None and args.pretrain_steps < 1:
        parser.error("--pretrain-steps must be at least 1")
    sys.path.insert(0, HERE)
    from train_bench import write_digits  # the digits writer the other CPU-scale checks use
    from fractrain.cli import main as fractrain

    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    if not os.path.isdir(os.path.join(work, "digits", "val")):
        write_digits(os.path.join(work, "digits"), size=32)
    experiment = EXPERIMENT if args.pretrain_steps is None else with_steps(work, args.pretrain_steps)
    os.chdir(work)
    return fractrain(["experiment", experiment, "--work", "."])


def with_steps(work: str, steps: int) -> str:
    """A copy of the experiment file with ``steps`` pre-training steps, in ``work``; its path."""
    import yaml

    with open(EXPERIMENT, encoding="utf-8") as handle:
        spec = yaml.safe_load(handle)
    flags = [str(flag) for flag in spec["pretrain"]]
    flags[flags.index("--steps") + 1] = str(steps)
    spec["pretrain"], spec["name"] = flags, f"{spec['name']}-{steps}"
    path = os.path.join(work, f"table5_cpu_short_{steps}.yaml")
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(spec, handle, allow_unicode=True, sort_keys=False)
    return path


if __name__ == "__main__":
    sys.exit(main())
