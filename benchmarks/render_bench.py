"""Render benchmark: ms per image per stage, end-to-end images/s and
attempts/s, search time and peak memory, with a pure-Python baseline
(the same kernels run uncompiled, as the research code draws points) in
the same run so the figures can be read as ratios.

    python benchmarks/render_bench.py                 # L = 1000, 512x512, all cores
    python benchmarks/render_bench.py --L 21000 --workers 2

Prints a table on stderr and one JSON line on stdout. Quote medians: the
machines this runs on are shared and noisy.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import zlib

import numpy as np

from fracbuild import encode, kernels, render, seeds, shards
from fracbuild.build import BuildSpec, run_build
from fracbuild.generators import get_kind


def median_ms(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def stage_times(generator, repeats: int) -> dict[str, float]:
    """Median ms per image of each stage, on one core, for class 0's maps."""
    params = generator.params
    rng = seeds.rng(0, 99)
    maps = generator.base
    steps = generator.inputs.steps
    codes = render.draw_mask_codes(rng, params.iterations)
    xs, ys, n_valid, bounds = kernels.chaos_game_tracked(maps, steps)
    image = kernels.rasterize_bounded(xs, ys, n_valid, bounds, codes, True, params.size, params.pad)
    png_bytes = encode.encode_png(image)
    samples = [shards.EncodedSample(f"{i:06d}", png_bytes, i, {"index": i}) for i in range(64)]
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "bench-000000.tar")
        write_ms = median_ms(lambda: shards.write_shard(path, samples), max(3, repeats // 10)) / len(samples)
        sha_ms = median_ms(lambda: shards.sha256_file(path), 5) / len(samples)
    return {
        **encoder_comparison(image, repeats),
        "mask_codes": median_ms(lambda: render.draw_mask_codes(rng, params.iterations), repeats),
        "chaos": median_ms(lambda: kernels.chaos_game_tracked(maps, steps), repeats),
        "raster": median_ms(lambda: kernels.rasterize_bounded(xs, ys, n_valid, bounds, codes, True, params.size,
                                                              params.pad), repeats),
        "fill_rate": median_ms(lambda: kernels.fill_rate(image), repeats),
        "encode_png": median_ms(lambda: encode.encode_png(image), repeats),
        "write_tar": write_ms + sha_ms,
        "png_bytes": len(png_bytes),
    }


def encoder_comparison(image: np.ndarray, repeats: int) -> dict[str, float]:
    """The PNG encoders we could have used, on the same image, ms and bytes:
    Pillow (tries every row filter), zlib level 1 without filters, ours."""
    from PIL import Image

    def pillow():
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()

    rows = np.concatenate([np.zeros((image.shape[0], 1), np.uint8), image], axis=1).tobytes()
    return {
        "alt_pillow_png_ms": median_ms(pillow, repeats), "alt_pillow_png_bytes": len(pillow()),
        "alt_zlib1_ms": median_ms(lambda: zlib.compress(rows, 1), repeats),
        "alt_zlib1_bytes": len(zlib.compress(rows, 1)),
    }


def pure_python_attempt_ms(generator, repeats: int) -> float:
    """One attempt with the same kernels run as plain Python (numba's
    ``py_func``): the per-point Python loop of the research code."""
    params = generator.params
    rng = seeds.rng(0, 98)
    steps = generator.inputs.steps

    def attempt():
        codes = render.draw_mask_codes(rng, params.iterations)
        xs, ys, n_valid, bounds = kernels.chaos_game_tracked.py_func(generator.base, steps)
        return kernels.rasterize_bounded.py_func(xs, ys, n_valid, bounds, codes, True, params.size, params.pad)

    return median_ms(attempt, repeats)


def peak_rss_mb() -> dict[str, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"main_process": round(own, 1), "largest_worker": round(children, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--L", type=int, default=1000, help="classes to build end to end (default 1000)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="worker processes (default: CPUs)")
    parser.add_argument("--repeats", type=int, default=50, help="repetitions per stage timing (default 50)")
    parser.add_argument("--baseline-repeats", type=int, default=3, help="pure-Python attempts (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    log = lambda message: print(message, file=sys.stderr)
    with tempfile.TemporaryDirectory() as folder:
        spec = BuildSpec(kind="1p-frac", seed=args.seed, params={"num_classes": args.L}, prefix="bench")
        started = time.perf_counter()
        manifest = run_build(spec, os.path.join(folder, "shards"), workers=args.workers, progress=True, log=log)
        wall = time.perf_counter() - started
    timings = manifest["timings"]
    cls = get_kind("1p-frac")
    generator = cls(cls.make_params({"num_classes": args.L}), args.seed, manifest["system"])
    generator.render(0)  # compile / load the kernels before timing
    stages = stage_times(generator, args.repeats)
    compiled_attempt = stages["mask_codes"] + stages["chaos"] + stages["raster"] + stages["fill_rate"]
    baseline = pure_python_attempt_ms(generator, args.baseline_repeats)
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.processor() or platform.platform()}",
        "L": args.L, "workers": args.workers, "size": generator.params.size,
        "iterations": generator.params.iterations,
        "search_seconds": round(timings["search_seconds"], 2),
        "render_seconds": round(timings["render_seconds"], 2),
        "wall_seconds_incl_search": round(wall, 2),
        "images_per_second": round(args.L / timings["render_seconds"], 1),
        "attempts_per_second": round(timings["attempts"] / timings["render_seconds"], 1),
        "attempts_per_image": round(timings["attempts"] / args.L, 3),
        "stage_ms_per_image": {k: round(v, 3) for k, v in stages.items()
                               if k != "png_bytes" and not k.startswith("alt_")},
        "other_encoders": {k[4:]: round(v, 3) for k, v in stages.items() if k.startswith("alt_")},
        "png_bytes": stages["png_bytes"],
        "compiled_attempt_ms": round(compiled_attempt, 3),
        "pure_python_attempt_ms": round(baseline, 1),
        "speedup_vs_pure_python": round(baseline / compiled_attempt, 1),
        "peak_rss_mb": peak_rss_mb(),
    }
    log(f"{args.L} images in {result['render_seconds']} s with {args.workers} workers: "
        f"{result['images_per_second']} images/s, {result['attempts_per_second']} attempts/s "
        f"(search {result['search_seconds']} s)")
    for stage, ms in result["stage_ms_per_image"].items():
        log(f"  {stage:<12} {ms:8.3f} ms/image")
    log(f"  attempt: compiled {compiled_attempt:.2f} ms vs pure Python {baseline:.0f} ms "
        f"({result['speedup_vs_pure_python']}x)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
