"""GpuAugment alone: device operations launched and time per batch, for the
working tree's ``fractrain.gpu_augment`` and (optionally) the same module at
another git revision, side by side in one process.

    python benchmarks/augment_bench.py                          # this tree, on the CPU
    python benchmarks/augment_bench.py --baseline 98d3ee1       # plus that revision's module
    python benchmarks/augment_bench.py --device cuda --batch 256 --image 512

Three figures per configuration:

* ops: aten operations dispatched per call (counted with a TorchDispatchMode,
  so the same on any device), split into those planning the batch on the
  host (tiny CPU tensors) and those working the pixels on the device. On a
  GPU each device op is (at most) one kernel launch, a few microseconds of
  host time; views are not counted (they launch none). Small batches are
  bound by them.
* device MB written: the bytes those operations write, a proxy for a GPU's
  memory traffic (these kernels are mostly elementwise, bound by it).
* ms: median wall time per call over ``--repeats`` calls (on CUDA with a
  synchronise after each; on the CPU it is the arithmetic, which also says
  how much work the GPU is given).

Prints a markdown table on stderr and one JSON line on stdout. The machines
this runs on are shared: quote medians.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class OpCounter(TorchDispatchMode):
    """Counts the aten operations run under it, views excepted (a view
    launches no kernel), and the bytes they write (their tensor outputs: a
    proxy for a GPU's memory traffic, which bounds these elementwise-heavy
    kernels; reads are of the same order)."""

    def __init__(self):
        super().__init__()
        self.count = 0
        self.written = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view:
            self.count += 1
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    self.written += t.numel() * t.element_size()
        return out


def load_revision(revision: str):
    """``fractrain.gpu_augment`` as it was at ``revision``: that revision's
    trainer/ package is extracted (git archive) and imported under another
    name, so both versions run in this process. ``revision`` may also be a
    folder holding such a trainer/ (for machines without the git history:
    ``mkdir -p F && git archive REV trainer | tar -x -C F``)."""
    if os.path.isdir(revision):
        folder = revision
    else:
        folder = tempfile.mkdtemp(prefix="augment-baseline-")
        archive = subprocess.run(["git", "-C", REPO, "archive", revision, "trainer"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
    label = os.path.basename(os.path.normpath(revision))
    name = "fractrain_" + "".join(ch if ch.isalnum() else "_" for ch in label)
    spec = importlib.util.spec_from_file_location(name, os.path.join(folder, "trainer", "__init__.py"),
                                                  submodule_search_locations=[os.path.join(folder, "trainer")])
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package  # relative imports and dataclasses look it up there
    spec.loader.exec_module(package)
    return importlib.import_module(f"{name}.gpu_augment")


def generator_for(module, device: torch.device, seed: int) -> torch.Generator:
    """The generator kind the module's GpuAugment takes: its ``GENERATOR_ON_HOST``
    says the host (newer modules); older ones draw on the images' device."""
    on_host = getattr(module, "GENERATOR_ON_HOST", False)
    return torch.Generator("cpu" if on_host else device).manual_seed(seed)


def fractal_batch(batch: int, size: int, seed: int) -> np.ndarray:
    """uint8 (batch, size, size): sparse bright points on black, like the data."""
    rng = np.random.default_rng(seed)
    images = np.zeros((batch, size, size), dtype=np.uint8)
    points = rng.integers(0, size, (batch, size * 8, 2))
    for n in range(batch):
        images[n, points[n, :, 0], points[n, :, 1]] = 255
    return images


def config_batch(config: str, device: torch.device):
    """A configuration "BxI->S" (batch B of I-pixel images, cropped to S) ->
    (images uint8 (B, I, I) on ``device``, targets int64 (B,) zeros, the
    default AugmentRecipe at S pixels)."""
    from fractrain.recipe import AugmentRecipe

    shape, size = config.split("->")
    batch, image = (int(v) for v in shape.split("x"))
    images = torch.from_numpy(fractal_batch(batch, image, 0)).to(device)
    targets = torch.zeros(batch, dtype=torch.int64, device=device)
    return images, targets, AugmentRecipe(input_size=int(size))


def count_ops(augment, images, targets, module, device) -> tuple[int, int, float]:
    """(ops on the host planning the batch, ops working the pixels, MB those
    write). Modules without a plan/apply split draw on the device: all their
    ops count there."""
    counter = OpCounter()
    generator = generator_for(module, device, 1)
    if not hasattr(augment, "plan"):
        with counter:
            augment(images, targets, generator)
        return 0, counter.count, counter.written / 1e6
    with counter:
        plan = augment.plan(tuple(images[:, None].shape if images.dim() == 3 else images.shape), generator)
    host = counter.count
    device_counter = OpCounter()
    with device_counter:
        augment.apply(images, targets, plan)
    return host, device_counter.count, device_counter.written / 1e6


def time_calls(augment, images, targets, module, device, repeats: int, warmup: int = 1) -> float:
    """Median ms per whole call (plan + apply), after ``warmup`` calls (a fused
    version compiles a variant per new input kind: give it several)."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for seed in range(warmup):
        augment(images, targets, generator_for(module, device, 1000 + seed))
    times = []
    for r in range(repeats):
        sync()
        started = time.perf_counter()
        augment(images, targets, generator_for(module, device, 2 + r))
        sync()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def profile(augment, images, targets, module, device, config: str) -> None:
    """Print the operations that take the most time over 3 calls (device time on CUDA)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        for seed in range(3):
            augment(images, targets, generator_for(module, device, 100 + seed))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"profile of {config} (3 calls), by {key}:", file=sys.stderr)
    print(prof.key_averages().table(sort_by=key, row_limit=20), file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", help="git revision (or folder holding its trainer/) whose GPU "
                                           "augmentation runs beside this tree's")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--configs", default="32x512->224,256x64->32",
                        help="comma-separated BATCHxIMAGE->SIZE (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--resize-precision", default="fp32",
                        help="comma-separated resize precisions to time for this tree's version "
                             "(fp32, tf32x2, taps; default: %(default)s)")
    parser.add_argument("--fuse", action="store_true",
                        help="also time this tree's version with fuse=True (its heaviest functions compiled; "
                             "the warm-up call compiles them, and ops are not counted: Inductor's kernels "
                             "are not aten operations)")
    parser.add_argument("--static", action="store_true",
                        help="also time this tree's version (and the baseline's, where it has one) in the static layout (static=True: the same shapes "
                             "every batch, one compiled graph with --fuse; ops not counted with --fuse)")
    parser.add_argument("--only", default=None, metavar="REGEX",
                        help="time only the variants whose name (as in the table, e.g. 'current taps static "
                             "fused') matches this regular expression")
    parser.add_argument("--profile", action="store_true",
                        help="also profile 3 calls of this tree's version per configuration (torch.profiler; "
                             "the operations that take the most device time, on stderr)")
    args = parser.parse_args()
    if args.only:
        try:
            re.compile(args.only)
        except re.error as error:
            parser.error(f"--only {args.only!r}: {error}")
    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, REPO)
    from fractrain import gpu_augment as current

    device = torch.device(args.device)
    modules = {"current": current}
    if args.baseline:
        modules[os.path.basename(os.path.normpath(args.baseline))] = load_revision(args.baseline)
    rows = []
    for config in args.configs.split(","):
        images, targets, recipe = config_batch(config, device)
        mine = [(f"current {p}", current, {"resize_precision": p}) for p in args.resize_precision.split(",")]
        if args.static:
            mine += [(f"{name} static", current, {**options, "static": True}) for name, _, options in mine]
        if args.fuse:
            mine += [(f"{name} fused", current, {**options, "fuse": True}) for name, _, options in mine]
        others = [(name, module, {}) for name, module in modules.items() if module is not current]
        if args.static:  # the baseline's static layout too, where it has one
            others += [(f"{name} static", module, {"static": True}) for name, module, _ in others]
        for name, module, options in mine + others:
            if args.only and not re.search(args.only, name):
                continue
            try:
                augment = module.GpuAugment(recipe, 1000, device, **options)
            except TypeError:  # a revision before the option
                print(f"{config}: {name} skipped (no such option there)", file=sys.stderr)
                continue
            if options.get("fuse"):
                host_ops = device_ops = written = None
            else:
                host_ops, device_ops, written = count_ops(augment, images, targets, module, device)
            ms = time_calls(augment, images, targets, module, device, args.repeats,
                            warmup=10 if options.get("fuse") else 1)
            if args.profile and module is current:  # after the timing's warm-up: no compiling inside
                profile(augment, images, targets, module, device, f"{config} ({name})")
            rows.append({"config": config, "module": name, "host_ops": host_ops, "device_ops": device_ops,
                         "device_mb_written": None if written is None else round(written, 1), "ms": round(ms, 2)})
    def layout(r):  # a row is compared with the baseline's row of the same configuration and layout
        return r["config"], " static" in r["module"]

    base = {layout(r): r for r in rows if not r["module"].startswith("current")}
    print("| config | module | host ops | device ops | device MB written | ms per call (median) | vs baseline, same layout (ms) |",
          file=sys.stderr)
    print("| --- | --- | --- | --- | --- | --- | --- |", file=sys.stderr)
    for r in rows:
        ref = base.get(layout(r))
        ratio = f"{r['ms'] / ref['ms']:.2f}" if ref and r["module"].startswith("current") else ""
        print(f"| {r['config']} | {r['module']} | {r['host_ops']} | {r['device_ops']} | {r['device_mb_written']} "
              f"| {r['ms']} | {ratio} |", file=sys.stderr)
    print(json.dumps({"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "machine": platform.machine(), "cpus": os.cpu_count(), "rows": rows}))


if __name__ == "__main__":
    main()
