"""PNG decode rate per core for the kinds' images: what the streaming input
path's loader workers spend per sample, and so how many cores keep a GPU fed.

Each kind renders ``--samples`` images at its default size (FractalDB 362 px,
RCDB and VisualAtom 512 px, 1p-frac 512 px), encoded exactly as the builder
writes them into shards (fracbuild.encode.encode_png). Each decoder then
decodes all of them, in turns (Pillow, then the others that import, then
Pillow again, ...) in this one process on one thread; medians of
``--repeats`` rounds. Every decoder's pixels are checked equal to Pillow's.

The feed's share (the main process: sha256 of the shard bytes, in the reader
threads) is timed as well, per sample.

    python benchmarks/decode_bench.py                      # fractaldb, rcdb, visualatom, 1p-frac
    python benchmarks/decode_bench.py --kinds fractaldb --samples 32 --repeats 7

Prints a markdown table on stderr and one JSON line on stdout. Decoders:
pillow (fracbuild.encode.decode_png), pyspng and cv2 (cv2.imdecode, one thread)
when installed (``pip install -e ".[bench]"``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kinds_bench import KINDS, make_generator  # noqa: E402

from fracbuild import encode  # noqa: E402

TARGETS = {"vit_tiny": 12_000, "vit_base": 2_700}  # images/s of one H200 training step (RESULTS.md, GPU section)


def decoders() -> dict:
    """name -> (PNG bytes -> uint8 array), for those that import."""
    found = {"pillow": encode.decode_png}
    try:
        import pyspng

        found["pyspng"] = pyspng.load
    except ImportError:
        pass
    try:
        import cv2

        cv2.setNumThreads(1)

        def cv2_decode(data: bytes) -> np.ndarray:
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
            return image[..., ::-1] if image.ndim == 3 else image  # BGR -> RGB

        found["cv2"] = cv2_decode
    except ImportError:
        pass
    return found


def rate(function, pngs: list[bytes]) -> float:
    started = time.perf_counter()
    for png in pngs:
        function(png)
    return len(pngs) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", default="fractaldb,rcdb,visualatom,1p-frac")
    parser.add_argument("--samples", type=int, default=24, help="images rendered per kind")
    parser.add_argument("--repeats", type=int, default=5, help="rounds per decoder (the median is reported)")
    args = parser.parse_args()
    available = decoders()
    results = {}
    for name in [n.strip() for n in args.kinds.split(",") if n.strip()]:
        generator, _ = make_generator(name)
        indices = list(KINDS[name][1](args.samples))
        pngs = [encode.encode_png(generator.render(i).image) for i in indices]
        reference = [encode.decode_png(p) for p in pngs]
        for decoder, function in available.items():
            assert all(np.array_equal(function(p), r) for p, r in zip(pngs, reference)), f"{decoder} differs"
        rounds: dict[str, list[float]] = {d: [] for d in available}
        hashing = []
        for _ in range(args.repeats):
            for decoder, function in available.items():
                rounds[decoder].append(rate(function, pngs))
            hashing.append(rate(lambda p: hashlib.sha256(p).digest(), pngs))
        row = {"size": int(reference[0].shape[0]), "channels": 1 if reference[0].ndim == 2 else 3,
               "png_kb": round(statistics.mean(len(p) for p in pngs) / 1e3, 1),
               "sha256_per_s": statistics.median(hashing),
               **{f"{d}_per_s": statistics.median(r) for d, r in rounds.items()}}
        results[name] = row
        print(f"{name}: " + ", ".join(f"{d} {row[f'{d}_per_s']:.0f}/s" for d in available), file=sys.stderr)

    names = list(available)
    print("\n| kind | size | PNG kB | " + " | ".join(f"{d} images/s/core" for d in names)
          + " | cores for vit_tiny 12k/s (best) | cores for vit_base 2.7k/s (best) |", file=sys.stderr)
    print("|---|---|---|" + "---|" * len(names) + "---|---|", file=sys.stderr)
    for name, row in results.items():
        best = max(row[f"{d}_per_s"] for d in names)
        print(f"| {name} | {row['size']} | {row['png_kb']} | "
              + " | ".join(f"{row[f'{d}_per_s']:.0f}" for d in names)
              + f" | {TARGETS['vit_tiny'] / best:.1f} | {TARGETS['vit_base'] / best:.1f} |", file=sys.stderr)
    print(json.dumps({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                      "decoders": names, "results": results}))


if __name__ == "__main__":
    main()
